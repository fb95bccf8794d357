"""What observation adds per remote Docker engine (provider key "docker@ENGINE"):
the fleet's built images and its workspace volumes there. Both are needed on
every run, not only on `fleet destroy`: a `build:` is built on each engine that
runs it (a no-op apply plans no build), and a workspace is uploaded to a remote
engine only while its volume is missing there (core/effects_hosts.py). Two list
calls per remote engine (a third when the fleet has volumes there: uploads cut
off), over its one connection. No decisions.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.core.errors import FleetError
from reconciler.core.model import split_key
from reconciler.providers.base import get_provider, images_of, volumes_of


def remote_keys(keys: Iterable[str]) -> list[str]:
    """The provider keys of remote Docker engines among `keys`."""
    return sorted(k for k in keys if split_key(k)[0] == "docker" and split_key(k)[1] is not None)


def engine_facts(fleet: str, keys: Iterable[str], unreachable: Mapping[str, str] | None = None,
                 partial: bool = False) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """(built images, workspace volumes) of `fleet` per remote engine key. A
    volume whose upload was cut off counts as missing (so it is uploaded again),
    unless `partial` (`fleet destroy --purge-workspaces`: it goes too). An
    engine that cannot be reached (in `unreachable`, or failing now) is left
    out: what is there is unknown, and the plan creates nothing there anyway."""
    images: dict[str, tuple[str, ...]] = {}
    volumes: dict[str, tuple[str, ...]] = {}
    for key in remote_keys(keys):
        engine = split_key(key)[1]
        if unreachable and (engine in unreachable or key in unreachable):
            continue
        provider = get_provider(key)
        look, held = images_of(provider), volumes_of(provider)
        try:
            images[key] = look.observe_images(fleet) if look is not None else ()
            vols = held.observe_volumes(fleet) if held is not None else ()
            cut = set(held.partial_volumes(fleet)) if held is not None and vols and not partial else set()
            volumes[key] = tuple(v for v in vols if v not in cut)
        except FleetError:  # EngineUnavailable, ProviderError: observation reports the engine
            images.pop(key, None)
            continue
    return images, volumes
