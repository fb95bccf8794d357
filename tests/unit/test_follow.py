"""engine/follow.py: one event stream per provider key the fleet uses, started and
ended as the spec names engines (the watch loop's `update` after a save)."""

from __future__ import annotations

import pytest

from reconciler.engine.follow import follow
from reconciler.providers.base import get_provider, reset_providers


class Stream:
    def __init__(self, log: list, name: str):
        self.log, self.name = log, name

    def close(self) -> None:
        self.log.append(("closed", self.name))


class Fake:
    def __init__(self, name: str, log: list, events: bool = True):
        self.name, self.log = name, log
        self.capabilities = frozenset({"events"} if events else set())

    def follow_events(self, fleet, on_event):
        self.log.append(("follow", self.name, fleet))
        on_event("change", f"agent a exited on {self.name}")
        return Stream(self.log, self.name)


@pytest.fixture
def fakes():
    reset_providers()
    log: list = []
    for name in ("docker", "docker@ssh://a", "docker@ssh://b"):
        get_provider(name, lambda name=name: Fake(name, log))
    get_provider("modal", lambda: Fake("modal", log, events=False))
    yield log
    reset_providers()


def test_a_stream_per_engine_key_and_updates(fakes):
    seen: list = []
    f = follow("f1", lambda *a: seen.append(a), ["docker", "docker@ssh://a", "modal"])
    assert [e for e in fakes if e[0] == "follow"] == [("follow", "docker", "f1"), ("follow", "docker@ssh://a", "f1")]
    assert ("docker@ssh://a", "change", "agent a exited on docker@ssh://a") in seen  # reported under its key
    fakes.clear()
    f.update(["docker", "docker@ssh://b"])  # a saved file moved the host to engine b
    assert fakes == [("closed", "docker@ssh://a"), ("follow", "docker@ssh://b", "f1")]
    fakes.clear()
    f.update(["docker", "docker@ssh://b"])  # nothing new: nothing restarted
    assert fakes == []
    f.close()
    assert sorted(fakes) == [("closed", "docker"), ("closed", "docker@ssh://b")]
