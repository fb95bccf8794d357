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
from typing import Any

from reconciler.state.home import fleet_home

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


def _new_lines(path: Path, state: dict[str, int]) -> list[dict[str, Any]]:
    """Entries appended to `path` since the offset kept in `state` (which
    follows rotation by inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return []
    if state.get("ino") != st.st_ino or st.st_size < state.get("pos", 0):
        state.update(ino=st.st_ino, pos=0)
    if st.st_size <= state["pos"]:
        return []
    with open(path, "rb") as fh:
        fh.seek(state["pos"])
        data = fh.read()
    end = data.rfind(b"\n") + 1  # a line being written is read next time
    state["pos"] += end
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def show(file: Path | None, names: list[str], all_agents: bool, follow: bool = False, tail: int | None = None,
         poll: float = 0.3) -> None:
    """`fleet logs AGENT --network`: print the agents' request logs (and, with
    `follow`, new entries as they come)."""
    from reconciler.core.errors import FleetError
    from reconciler.load.loader import did_you_mean, load

    desired = load(file)
    if all_agents or not names:
        names = sorted(a.name for a in desired.agents.values() if a.grants)
        if not names:
            raise FleetError(f"no agent of fleet {desired.fleet} has grants, so none goes through the grants proxy")
    for n in names:
        if n not in desired.agents:
            known = ", ".join(sorted(desired.agents)) or "none"
            raise FleetError(f"no agent '{n}' in fleet {desired.fleet} (agents: {known}){did_you_mean(n, desired.agents)}")
    width = max(len(n) for n in names)
    prefix = (lambda n: f"{n:<{width}} | ") if len(names) > 1 else (lambda n: "")
    states: dict[str, dict[str, int]] = {}
    for n in names:
        for entry in read(desired.fleet, n, tail):
            print(prefix(n) + format_entry(entry), flush=True)
        path = log_path(desired.fleet, n)
        states[n] = {"ino": path.stat().st_ino, "pos": path.stat().st_size} if path.exists() else {}
    while follow:
        time.sleep(poll)
        for n in names:
            for entry in _new_lines(log_path(desired.fleet, n), states[n]):
                print(prefix(n) + format_entry(entry), flush=True)
