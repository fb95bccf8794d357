"""The per-agent network log: what each agent asked the forward proxy for.

`$FLEET_HOME/network/<fleet>/<agent>.log`, one JSON object per line: time,
method, host, port, path (without its query string, which can carry
credentials), status, the grant used (or null), and how the request went
(`intercept`, `tunnel`, `http`, `refused`). Header values are never logged.
Read with `fleet logs AGENT --network`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import IO, Any, Iterator

from ..home import fleet_home

ROTATE_BYTES = 5 * 1024 * 1024


def log_path(fleet: str, agent: str) -> Path:
    return fleet_home() / "network" / fleet / f"{agent}.log"


def _strip_query(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


def record(fleet: str, agent: str, **fields: Any) -> None:
    """Append one entry; never raises (a full disk must not break a request)."""
    entry = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), **fields}
    if isinstance(entry.get("path"), str):
        entry["path"] = _strip_query(entry["path"])
    path = log_path(fleet, agent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if path.stat().st_size > ROTATE_BYTES:
                os.replace(path, path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
    except OSError:
        pass


def format_entry(entry: dict[str, Any]) -> str:
    host = entry.get("host", "?")
    if entry.get("port") not in (None, 80, 443):
        host = f"{host}:{entry['port']}"
    grant = entry.get("grant") or "-"
    path = entry.get("path") or ""
    line = f"{entry.get('time', '')}  {entry.get('method', '?'):<7} {entry.get('status', '-')!s:<4} {grant:<10} {entry.get('mode', ''):<9} {host}{path}"
    if entry.get("error"):
        line += f"  ({entry['error']})"
    return line


def read(fleet: str, agent: str, tail: int | None = None) -> list[dict[str, Any]]:
    path = log_path(fleet, agent)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    if tail is not None:
        lines = lines[-tail:] if tail else []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def follow(fleet: str, agent: str, poll: float = 0.3) -> Iterator[dict[str, Any]]:
    """New entries as they are written (after the current end), forever."""
    path = log_path(fleet, agent)
    fh: IO[str] | None = None
    pos = path.stat().st_size if path.exists() else 0
    inode = path.stat().st_ino if path.exists() else None
    buf = ""
    while True:
        try:
            st = path.stat()
        except FileNotFoundError:
            time.sleep(poll)
            continue
        if inode != st.st_ino or st.st_size < pos:  # rotated
            inode, pos, buf = st.st_ino, 0, ""
        if st.st_size > pos:
            with open(path, errors="replace") as fh:
                fh.seek(pos)
                buf += fh.read()
                pos = fh.tell()
            while "\n" in buf:
                line, buf = buf.split("\n", 1)
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
        else:
            time.sleep(poll)
