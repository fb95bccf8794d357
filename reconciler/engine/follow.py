"""Events from the providers that declare the "events" capability, for the
watch loop: the watch layer never reaches a provider itself.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

from typing import Callable, Iterable

from reconciler.providers.base import EventStream, events_of, get_provider


class Followers:
    """The event streams followed for one fleet; `close()` ends them all."""

    def __init__(self, streams: list[EventStream]):
        self.streams = streams

    def close(self) -> None:
        for s in self.streams:
            s.close()


def follow(fleet: str, on_event: Callable[[str, str, str], None], providers: Iterable[str] = ("docker",)) -> Followers:
    """Follow the fleet's events on every provider in `providers` that has them:
    `on_event(provider, kind, detail)`, kind "change" or "engine" (base.Events)."""
    def report(name: str) -> Callable[[str, str], None]:
        return lambda kind, detail: on_event(name, kind, detail)

    streams: list[EventStream] = []
    for name in providers:
        ev = events_of(get_provider(name))
        if ev is not None:
            streams.append(ev.follow_events(fleet, report(name)))
    return Followers(streams)
