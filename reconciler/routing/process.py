"""Where the background proxy keeps its files under `$FLEET_HOME`, and how to
find the one that runs: `proxy.lock` (an flock it holds for its whole life),
`proxy.pid`, `proxy.state.json` (what it listens on, listen errors, the route
table revision it serves) and `proxy.log`.
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path

from reconciler.state.home import fleet_home


def pid_path() -> Path:
    return fleet_home() / "proxy.pid"


def log_path() -> Path:
    return fleet_home() / "proxy.log"


def state_path() -> Path:
    return fleet_home() / "proxy.state.json"


def lock_path() -> Path:
    return fleet_home() / "proxy.lock"


def start_lock_path() -> Path:
    return fleet_home() / "proxy.start.lock"


# -- finding the running proxy ------------------------------------------------------------


def running_pid() -> int | None:
    """The pid of the running proxy, or None. The proxy holds `proxy.lock`;
    when the lock can be taken, nobody is running, whatever a pid file says."""
    path = lock_path()
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None
    for _ in range(50):  # locked: the pid file follows at once
        try:
            return int(pid_path().read_text().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.02)
    return None


def read_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, ValueError):
        return None
