"""Volumes fleet made for a fleet's shared hosts (their /workspace when no
workspace directory is given), on the providers that declare the "volumes"
capability: listed and purged through the engine, never by the CLI itself.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

from typing import Iterable

from reconciler.providers.base import get_provider, volumes_of


def observe(fleet: str, providers: Iterable[str] = ("docker",)) -> dict[str, tuple[str, ...]]:
    """Provider name -> the fleet's volumes there."""
    out: dict[str, tuple[str, ...]] = {}
    for name in providers:
        vols = volumes_of(get_provider(name))
        if vols is not None:
            out[name] = vols.observe_volumes(fleet)
    return out


def purge(fleet: str, providers: Iterable[str] = ("docker",)) -> list[str]:
    """Remove every volume of the fleet (`fleet destroy --purge-workspaces`);
    the names removed."""
    removed: list[str] = []
    for name, names in observe(fleet, providers).items():
        vols = volumes_of(get_provider(name))
        assert vols is not None
        removed.extend(v for v in names if vols.remove_volume(fleet, v))
    return removed
