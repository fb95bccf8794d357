"""Where fleet keeps user state: `$FLEET_HOME` (default ~/.fleet).

The CA, the credential store, the route table, the proxy's pid and log, locks.
Tests always point FLEET_HOME at a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path


def fleet_home() -> Path:
    raw = os.environ.get("FLEET_HOME")
    home = Path(raw).expanduser() if raw else Path.home() / ".fleet"
    return home


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def locks_dir() -> Path:
    return ensure_dir(fleet_home() / "locks")
