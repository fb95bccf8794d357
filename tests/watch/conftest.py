"""Fixtures for the watch tests: watcher subprocesses that are always stopped."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from .proc import WatchProcess


@pytest.fixture
def watcher(fleet_name) -> Iterator[Callable[..., WatchProcess]]:
    """Start `fleet apply --watch` subprocesses; each is stopped before the
    fleet's containers are cleaned up (so it cannot re-create them)."""
    started: list[WatchProcess] = []

    def start(path, *args: str, **kw) -> WatchProcess:
        w = WatchProcess(path, *args, **kw)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()
