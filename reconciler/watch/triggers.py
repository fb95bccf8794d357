"""What wakes the watch loop: file saves, Docker events, signals and timers.

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

# Docker container events after which the fleet may no longer match the file,
# and how the loop names them.
WATCHED_EVENTS = {"die": "exited", "destroy": "removed", "stop": "stopped", "kill": "killed", "oom": "out of memory", "pause": "paused"}

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


class DockerEvents:
    """Follows Docker's event stream for this fleet's containers in a thread.

    When the engine goes away the stream ends; the thread reconnects with a
    growing delay (up to 2 s) and pokes the loop when it is back, so the loop
    re-observes at once instead of waiting for its next resync."""

    def __init__(self, fleet: str, poke: Callable[[Trigger], None]):
        self.fleet = fleet
        self._poke = poke
        self._stop = threading.Event()
        self._stream = None
        self._thread = threading.Thread(target=self._run, name="fleet-docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import docker

        delay, lost = 0.25, False
        while not self._stop.is_set():
            client = None
            try:
                client = docker.from_env(timeout=10)
                self._stream = client.events(
                    filters={"label": f"dev.fleet.project={self.fleet}", "type": "container"}, decode=True
                )
                if lost:
                    self._poke(Trigger("engine", "Docker events reconnected"))
                lost, delay = False, 0.25
                for ev in self._stream:
                    if self._stop.is_set():
                        return
                    action = ev.get("Action") or ev.get("status") or ""
                    if action in WATCHED_EVENTS:
                        attrs = (ev.get("Actor") or {}).get("Attributes") or {}
                        who = attrs.get("dev.fleet.agent") or attrs.get("dev.fleet.host") or attrs.get("name", "?")
                        kind = attrs.get("dev.fleet.kind", "container")
                        code = f" {attrs['exitCode']}" if action == "die" and "exitCode" in attrs else ""
                        self._poke(Trigger("docker", f"{kind} {who} {WATCHED_EVENTS[action]}{code}"))
            except Exception:
                pass
            finally:
                if client is not None:
                    try:
                        client.close()
                    except Exception:
                        pass
            if self._stop.is_set():
                return
            if not lost:
                lost = True
                self._poke(Trigger("engine", "Docker event stream lost"))
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
