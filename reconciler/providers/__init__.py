"""Providers realise hosts and agents: `base` holds the `Provider` protocol each
driver implements and `get_provider`; the drivers are `docker/` and `modal/`;
`terminal` bridges the user's terminal to an agent's (attach, exec -it).

Drivers are imported lazily by name so that a fleet with no Modal host never
imports `modal`. Every method does one thing to one resource and decides nothing.

Layer 7. May import: `core` to `routing` (a driver needs `core`, `state`,
`load`, `net`; what a container needs from grants and routing, the engine passes
in). Never `engine` or any layer above it. Only `engine` imports a driver or
calls `get_provider`; the layers above it may use the types in `base` and the
terminal bridge in `terminal`.
"""

from __future__ import annotations

from reconciler.providers.base import Provider, get_provider

__all__ = ["Provider", "get_provider"]
