"""Providers realise hosts and agents. Each implements `Provider` (see base.py).

Providers are imported lazily by name so that a fleet with no Modal host never
imports `modal`.
"""

from __future__ import annotations

from reconciler.providers.base import Provider, get_provider

__all__ = ["Provider", "get_provider"]
