"""Docker's event stream for one fleet's containers (capability "events").

A thread follows the stream and reports container changes after which the fleet
may no longer match its file. When the engine goes away the stream ends; the
thread reconnects with a growing delay (up to 2 s) and reports when it is back,
so the watch loop re-observes at once instead of waiting for its next resync.
Events only say *that* something changed: the loop always re-observes.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from reconciler.core import labels as L

# Docker container events after which the fleet may no longer match the file,
# and how they are named.
WATCHED_EVENTS = {"die": "exited", "destroy": "removed", "stop": "stopped", "kill": "killed", "oom": "out of memory", "pause": "paused"}


def describe(ev: dict[str, Any]) -> str | None:
    """One line for a watched event ("agent a1 exited 3"), None for the others."""
    action = ev.get("Action") or ev.get("status") or ""
    if action not in WATCHED_EVENTS:
        return None
    attrs = (ev.get("Actor") or {}).get("Attributes") or {}
    who = attrs.get(L.AGENT) or attrs.get(L.HOST) or attrs.get("name", "?")
    kind = attrs.get(L.KIND, "container")
    code = f" {attrs['exitCode']}" if action == "die" and "exitCode" in attrs else ""
    return f"{kind} {who} {WATCHED_EVENTS[action]}{code}"


class DockerEvents:
    """Follows the fleet's container events in a daemon thread until `close()`.
    `on_event(kind, detail)`: kind "change" (a watched event) or "engine"
    (the stream was lost, or reconnected). `client`: where the stream comes
    from (a function giving a docker client that stays open: a remote engine's
    client over its one ssh connection); None: a client of its own on the local
    engine from the environment. `engine`: named in the "engine" reports."""

    def __init__(self, fleet: str, on_event: Callable[[str, str], None], client: Callable[[], Any] | None = None,
                 engine: str | None = None, max_delay: float = 2.0):
        self.fleet = fleet
        self._on_event = on_event
        self._client = client
        self._what = f"Docker events of engine {engine}" if engine else "Docker event stream"
        self._max_delay = max_delay
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="fleet-docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import docker

        delay, lost = 0.25, False
        while not self._stop.is_set():
            client = None
            try:
                if self._client is not None:
                    source = self._client()  # shared: not closed here
                else:
                    source = client = docker.from_env(timeout=10)
                self._stream = source.events(filters={"label": L.project_filter(self.fleet), "type": "container"}, decode=True)
                if lost:
                    self._on_event("engine", f"{self._what} reconnected" if self._client else "Docker events reconnected")
                lost, delay = False, 0.25
                for ev in self._stream:
                    if self._stop.is_set():
                        return
                    line = describe(ev)
                    if line is not None:
                        self._on_event("change", line)
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
                self._on_event("engine", f"{self._what} lost")
            self._stop.wait(delay)
            delay = min(delay * 2, self._max_delay)

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()
            except Exception:
                pass
