"""Which providers a fleet has used, kept in `$FLEET_HOME/fleets/<fleet>.json`.

Observation asks only the providers fleet.yaml names (so a fleet without Modal
hosts never imports modal). When the last Modal host is removed from the file,
its sandbox must still be observed to be destroyed: this record remembers that
the fleet once used Modal. A provider is added before anything is created with
it and dropped after an apply that leaves nothing of it behind.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from reconciler.state.home import ensure_dir, fleet_home, write_atomic

_lock = threading.Lock()


def _path(fleet: str) -> Path:
    return fleet_home() / "fleets" / f"{fleet}.json"


def used(fleet: str) -> set[str]:
    try:
        data = json.loads(_path(fleet).read_text())
    except (OSError, ValueError):
        return set()
    names = data.get("providers") if isinstance(data, dict) else None
    return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()


def _write(fleet: str, names: set[str]) -> None:
    path = _path(fleet)
    ensure_dir(path.parent)
    write_atomic(path, json.dumps({"providers": sorted(names)}) + "\n", mode=0o644)


def record(fleet: str, *providers: str) -> None:
    """Remember that `fleet` has resources with these providers."""
    with _lock:
        have = used(fleet)
        if not set(providers) <= have:
            _write(fleet, have | set(providers))


def settle(fleet: str, remaining: set[str]) -> None:
    """After a successful apply: keep only the providers something still uses."""
    with _lock:
        if used(fleet) != remaining:
            _write(fleet, remaining)
