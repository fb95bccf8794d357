"""What wakes the watch loop: file saves, provider events, signals and timers.

The loop itself runs on the main thread and sleeps in one place, `Waker.wait`.
Every source of change pokes the waker from its own thread (or from a signal
handler) with a `Trigger` saying what happened; the loop then re-plans once for
everything that arrived meanwhile. Triggers only say *that* something may have
changed: the loop always re-observes (level-triggered), so a lost or duplicated
event never leaves the fleet wrong.

The waker is a self-pipe plus a deque (both safe to touch from a signal
handler: no locks), so a Ctrl-C can never deadlock against a waiting loop.
"""

from __future__ import annotations

import os
import select
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

Source = Literal["file", "docker", "engine", "signal", "warn", "timer", "input", "confirm"]
_EVENT_SOURCES: dict[str, Source] = {"docker": "docker"}  # provider -> how its resource events are named

# watchfiles timing, in ms: a change is reported once no further change came for
# STEP ms; a burst of saves is grouped over at most DEBOUNCE ms.
STEP_MS = 30
DEBOUNCE_MS = 100


@dataclass(frozen=True)
class Trigger:
    source: Source
    detail: str = ""


class Waker:
    """Many threads poke, the loop waits; reasons are collected between waits."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._pending: deque[Trigger] = deque()

    def poke(self, trigger: Trigger) -> None:
        self._pending.append(trigger)
        try:
            os.write(self._w, b".")
        except (BlockingIOError, OSError):  # pipe full: the loop is awake anyway
            pass

    def wait(self, timeout: float | None) -> list[Trigger]:
        """Block until poked or `timeout` seconds pass; return what arrived."""
        if not self._pending:
            try:
                select.select([self._r], [], [], None if timeout is None else max(0.0, timeout))
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                pass
        try:
            while os.read(self._r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        out = []
        while self._pending:
            out.append(self._pending.popleft())
        return out

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class FileWatch:
    """Watches fleet.yaml (through its directory, so editors that save by
    renaming a temporary file are seen) and, recursively, the build contexts it
    references. `update` re-targets the watch when the file names other
    contexts."""

    def __init__(self, file: Path, poke: Callable[[Trigger], None]):
        self.file = file.resolve()
        self._poke = poke
        self._file = self._start((self.file.parent,), recursive=False, name_filter=self.file.name)
        self._contexts: tuple[Path, ...] = ()
        self._ctx_stop: threading.Event | None = None

    def update(self, contexts: Iterable[Path]) -> None:
        wanted = tuple(sorted({Path(c).resolve() for c in contexts}))
        if wanted == self._contexts:
            return
        if self._ctx_stop is not None:
            self._ctx_stop.set()
            self._ctx_stop = None
        self._contexts = wanted
        if wanted:
            self._ctx_stop = self._start(wanted, recursive=True, name_filter=None)

    def _start(self, paths: tuple[Path, ...], recursive: bool, name_filter: str | None) -> threading.Event:
        stop = threading.Event()
        threading.Thread(
            target=self._run, args=(paths, recursive, name_filter, stop), name="fleet-watch-files", daemon=True
        ).start()
        return stop

    def _run(self, paths: tuple[Path, ...], recursive: bool, name_filter: str | None, stop: threading.Event) -> None:
        import watchfiles

        if name_filter is not None:
            def keep(change: watchfiles.Change, path: str) -> bool:
                return os.path.basename(path) == name_filter
        else:
            keep = watchfiles.DefaultFilter()
        try:
            for changes in watchfiles.watch(
                *paths, watch_filter=keep, debounce=DEBOUNCE_MS, step=STEP_MS, stop_event=stop,
                recursive=recursive, raise_interrupt=False, rust_timeout=1000,
            ):
                if stop.is_set():
                    return
                names = sorted({os.path.relpath(p, self.file.parent) for _, p in changes})
                self._poke(Trigger("file", ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")))
        except Exception as exc:  # a context directory removed, inotify limits
            if not stop.is_set():
                shown = ", ".join(str(p) for p in paths)
                self._poke(Trigger("warn", f"stopped watching {shown}: {exc}"))

    def close(self) -> None:
        self._file.set()
        if self._ctx_stop is not None:
            self._ctx_stop.set()


class ProviderEvents:
    """Pokes the loop with the fleet's resource events, from every provider that
    declares the "events" capability (through the engine: providers/docker/events.py
    follows Docker's stream and reconnects when the engine comes back)."""

    def __init__(self, fleet: str, poke: Callable[[Trigger], None], providers: Iterable[str] = ("docker",)):
        from reconciler.engine import follow as events

        self.fleet = fleet
        self._poke = poke
        self._followers = events.follow(fleet, self._report, providers)

    def _report(self, provider: str, kind: str, detail: str) -> None:
        base = provider.split("@", 1)[0]  # "docker@ENGINE": a Docker engine like the local one
        source: Source = _EVENT_SOURCES.get(base, "engine") if kind == "change" else "engine"
        self._poke(Trigger(source, detail))

    def update(self, providers: Iterable[str]) -> None:
        """Follow these provider keys from now on (a save that names another engine)."""
        self._followers.update(providers)

    def close(self) -> None:
        self._followers.close()


DockerEvents = ProviderEvents  # the name watch/loop.py uses
