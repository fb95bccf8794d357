"""The per-fleet apply lock: one apply (or watcher) of a fleet at a time.

A second apply waits (and says who it waits for), then reads fresh state; a
watcher refuses to wait and names the holder instead. fcntl locks vanish with
their process, so a killed apply never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from reconciler.core.errors import FleetError
from reconciler.state.home import locks_dir


class LockHeld(FleetError):
    pass


def _holder(path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"pid {info.get('pid')} ({info.get('command', '?')}, since {info.get('since', '?')})"
    except (OSError, ValueError):
        return "another fleet process"


@contextmanager
def fleet_lock(fleet: str, wait: bool = True, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    try:
        path = locks_dir() / f"{fleet}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise FleetError(f"cannot create the lock for fleet {fleet} under FLEET_HOME: {exc.strerror} ({exc.filename})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            if not wait:
                raise LockHeld(f"fleet {fleet} is locked by {holder}; only one apply or watcher runs per fleet") from None
            if on_wait:
                on_wait(f"waiting for fleet {fleet}'s lock, held by {holder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {"pid": os.getpid(), "command": " ".join(["fleet"] + sys.argv[1:])[:200], "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:  # a full or read-only FLEET_HOME: say so, change nothing
            raise FleetError(
                f"cannot write the lock of fleet {fleet} under FLEET_HOME ({path}): {exc.strerror}; "
                "free some space or fix its permissions"
            ) from None
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
