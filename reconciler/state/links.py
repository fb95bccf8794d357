"""The links the proxy daemon keeps to remote Docker engines, as files under $FLEET_HOME.

An agent on a remote engine reached over SSH (`engine: ssh://...`) is served by
ONE `ssh` process per engine that the proxy daemon runs (routing/links.py): a
dynamic SOCKS forward the routing proxy dials the agents' bridge addresses
through, and, while agents there hold grant credentials, a reverse forward from
the remote `fleet_agents` gateway back to this machine's forward proxy.

What the daemon needs to know beyond the route table is in `links.json`,
written only by the engine (the `credentials issue` action of a remote agent):

    {"version": 1, "engines": {"ssh://box": {"gateway": "172.18.0.1", "port": 23456}}}

`gateway`:`port` is where the reverse forward listens on the remote (the
agents' HTTPS_PROXY points there). The connections it brings back reach the
forward proxy from `source_for_engine(engine)`, a loopback address of this
machine that the remote agents' credentials are bound to (`loopback:<ip>`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from reconciler.state.home import ensure_dir, fleet_home, write_atomic

VERSION = 1
PORT_BASE, PORT_SPAN = 20000, 20000  # remote reverse-forward ports: 20000-39999


def links_path() -> Path:
    return fleet_home() / "links.json"


def source_for_engine(engine: str) -> str:
    """The loopback address the connections coming back from `engine` dial the
    forward proxy from: 127.x.y.z from a hash of the engine, never 127.0.0.x."""
    d = hashlib.sha256(f"engine:{engine}".encode()).digest()
    return f"127.{1 + d[0] % 254}.{d[1]}.{1 + d[2] % 254}"


def remote_port_for(engine: str) -> int:
    """The port of the reverse forward on the remote gateway: stable for this
    FLEET_HOME and engine (agents keep it in their environment across link
    restarts), distinct for two FLEET_HOMEs using one engine."""
    d = hashlib.sha256(f"{fleet_home().resolve()}|{engine}".encode()).digest()
    return PORT_BASE + int.from_bytes(d[:4], "big") % PORT_SPAN


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    ensure_dir(fleet_home())
    with open(fleet_home() / "links.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def read_links() -> dict[str, dict[str, Any]]:
    """engine -> {gateway, port}; empty when there is no (readable) file."""
    try:
        data = json.loads(links_path().read_text())
    except (OSError, ValueError):
        return {}
    engines = data.get("engines") if isinstance(data, dict) else None
    return {k: v for k, v in (engines or {}).items() if isinstance(v, dict)}


def set_reverse(engine: str, gateway: str, port: int) -> bool:
    """Record where `engine`'s reverse forward listens; False when unchanged."""
    with _locked():
        engines = read_links()
        entry = {"gateway": gateway, "port": port}
        if engines.get(engine) == entry:
            return False
        engines[engine] = entry
        blob = json.dumps({"version": VERSION, "engines": engines}, indent=1, sort_keys=True) + "\n"
        write_atomic(links_path(), blob, mode=0o644)
        return True
