"""Delivery state of first messages, kept under $FLEET_HOME/messages/<fleet>/.

A container's labels cannot change after creation, so the fact that its first
message was typed in is recorded here, keyed by container id: a no-op apply
does not type it again, a replaced agent (new container) gets it again, and an
apply killed between creating an agent and messaging it delivers on the next run.
"""

from __future__ import annotations

import time
from pathlib import Path

from reconciler.state.home import fleet_home, read_records, write_record


def _dir(fleet: str) -> Path:
    return fleet_home() / "messages" / fleet


def record(fleet: str, agent: str, container_id: str, state: str, detail: str = "") -> None:
    write_record(_dir(fleet), agent, {"container": container_id, "state": state, "detail": detail, "at": time.time()})


def states(fleet: str) -> dict[str, dict]:
    """agent -> {"container", "state", "detail", "at"}; one directory listing."""
    return read_records(_dir(fleet))


def delivered(fleet: str, agent: str, container_id: str, table: dict[str, dict] | None = None) -> bool:
    entry = (table if table is not None else states(fleet)).get(agent)
    return bool(entry and entry.get("container") == container_id and entry.get("state") == "delivered")


def typed(text: str) -> bytes:
    """Text as a person types it: lines joined by newlines, then Enter (\\r)."""
    return text.replace("\r\n", "\n").rstrip("\n").encode() + b"\r"
