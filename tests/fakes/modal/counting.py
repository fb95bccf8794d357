"""Count the RPCs a client makes, so tests can assert what an operation cost
(e.g. "a no-op apply makes one SandboxListV2 call and no exec")."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from grpclib.const import Handler


class RpcCounter:
    """Thread-safe counts of RPCs by short name (`SandboxListV2`, `TaskExecStart`, …)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Counted:
    """Wraps a grpclib servicer so every call through it is counted."""

    def __init__(self, servicer: Any, counter: RpcCounter) -> None:
        self._servicer = servicer
        self._counter = counter

    def __mapping__(self) -> dict[str, Handler]:
        out: dict[str, Handler] = {}
        for path, handler in self._servicer.__mapping__().items():
            out[path] = handler._replace(func=self._wrap(path.rsplit("/", 1)[-1], handler.func))
        return out

    def _wrap(self, name: str, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def counted(stream: Any) -> None:
            self._counter.add(name)
            await func(stream)

        return counted
