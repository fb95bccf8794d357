"""Events from the providers that declare the "events" capability, for the
watch loop: the watch layer never reaches a provider itself.

One stream per provider key: "docker" (the local engine) and each
"docker@ENGINE" the fleet uses, whose stream goes over that engine's one
connection. `Followers.update` follows the keys a new spec names (an engine
added to fleet.yaml) and ends the streams of keys it no longer needs.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable

from reconciler.providers.base import EventStream, events_of, get_provider


class Followers:
    """The event streams followed for one fleet, by provider key; `close()` ends them all."""

    def __init__(self, fleet: str, on_event: Callable[[str, str, str], None]):
        self.fleet = fleet
        self._on_event = on_event
        self._lock = threading.Lock()
        self.streams: dict[str, EventStream] = {}

    def update(self, providers: Iterable[str]) -> None:
        """Follow every key of `providers` that has events (and is not followed
        yet); stop following the keys not in it."""
        wanted = set(providers)
        with self._lock:
            for name in sorted(set(self.streams) - wanted):
                self.streams.pop(name).close()
            for name in sorted(wanted - set(self.streams)):
                ev = events_of(get_provider(name))
                if ev is not None:
                    self.streams[name] = ev.follow_events(self.fleet, self._report(name))

    def _report(self, name: str) -> Callable[[str, str], None]:
        return lambda kind, detail: self._on_event(name, kind, detail)

    def close(self) -> None:
        with self._lock:
            streams, self.streams = list(self.streams.values()), {}
        for s in streams:
            s.close()


def follow(fleet: str, on_event: Callable[[str, str, str], None], providers: Iterable[str] = ("docker",)) -> Followers:
    """Follow the fleet's events on every provider in `providers` that has them:
    `on_event(provider, kind, detail)`, kind "change" or "engine" (base.Events)."""
    followers = Followers(fleet, on_event)
    followers.update(providers)
    return followers
