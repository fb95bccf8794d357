"""Agents a person stopped with `fleet stop`, kept under $FLEET_HOME/stopped/<fleet>/.

A stop keeps the container, and `apply` (or `--watch`) must not start it again.
A container's labels cannot change after creation, so the fact is recorded here,
keyed by container id and by the spec the agent had when it was stopped:
observation hands it to reconcile as data (`ObservedAgent.stop_spec_hash`), and a
replaced container (new id) or a changed spec no longer matches, so the agent
runs again. `fleet start` and `fleet restart` forget the record.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from reconciler.state.home import fleet_home, read_records, write_record


def _dir(fleet: str) -> Path:
    return fleet_home() / "stopped" / fleet


def record(fleet: str, agent: str, container_id: str, spec_hash: str) -> None:
    """Remember that `agent` (this container, this spec) was stopped on purpose."""
    write_record(_dir(fleet), agent, {"container": container_id, "spec_hash": spec_hash, "at": time.time()})


def forget(fleet: str, agent: str) -> None:
    try:
        os.unlink(_dir(fleet) / f"{agent}.json")
    except FileNotFoundError:
        pass


def table(fleet: str) -> dict[str, dict]:
    """agent -> {"container", "spec_hash", "at"}; one directory listing."""
    return read_records(_dir(fleet))


def spec_for(entry: dict | None, container_id: str) -> str | None:
    """The spec hash recorded for this very container, or None (no stop, or the
    record is for a container that has since been replaced)."""
    if not entry or entry.get("container") != container_id:
        return None
    value = entry.get("spec_hash")
    return value if isinstance(value, str) else None


def purge(fleet: str) -> None:
    """Forget every stop of a fleet (after `fleet destroy`)."""
    d = _dir(fleet)
    try:
        for name in os.listdir(d):
            try:
                os.unlink(d / name)
            except OSError:
                pass
        os.rmdir(d)
    except OSError:
        pass
