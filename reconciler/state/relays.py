"""The grants relays this machine runs for Modal hosts, kept under $FLEET_HOME/relays/<fleet>/.

An agent on a Modal host reaches the grants forward proxy through a relay: a
small process here (providers/modal/relayd.py) that keeps a backhaul exec open in
the host's sandbox and dials the forward proxy from a loopback address of its
own (`source_for`), to which the agents' credentials are bound. One relay per
host, started by the plan's `relay start` and stopped by `relay stop`
(engine/handlers_relays.py). Each writes `<host>.json` ({pid, source, port,
up}) and logs to `<host>.log`; a record whose process is gone does not count,
so the next apply starts it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from reconciler.core.model import MODAL_RELAY_PORT
from reconciler.state.home import ensure_dir, fleet_home, read_records, write_record

SANDBOX_PORT = MODAL_RELAY_PORT  # where the relay listens inside the sandbox (the agents' HTTPS_PROXY)
MARKER = "reconciler.providers.modal.relayd"  # in the relay's command line


def relays_dir(fleet: str) -> Path:
    return fleet_home() / "relays" / fleet


def log_path(fleet: str, host: str) -> Path:
    return relays_dir(fleet) / f"{host}.log"


def source_for(fleet: str, host: str) -> str:
    """The loopback address the relay of `fleet/host` dials the forward proxy
    from (the identity its agents' credentials are bound to): 127.x.y.z from a
    hash of the pair, never 127.0.0.x."""
    d = hashlib.sha256(f"{fleet}/{host}".encode()).digest()
    return f"127.{1 + d[0] % 254}.{d[1]}.{1 + d[2] % 254}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return MARKER.encode() in fh.read()
    except OSError:
        return False


def running(fleet: str) -> dict[str, int]:
    """host -> pid of the relays of `fleet` whose process runs (observation)."""
    out: dict[str, int] = {}
    for host, rec in read_records(relays_dir(fleet)).items():
        pid = rec.get("pid")
        if isinstance(pid, int) and _alive(pid):
            out[host] = pid
    return out


def record(fleet: str, host: str, entry: dict) -> None:
    write_record(relays_dir(fleet), host, entry)


def read(fleet: str, host: str) -> dict | None:
    return read_records(relays_dir(fleet)).get(host)


def spawn(fleet: str, host: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Start a relay process (its own session, so it outlives the command) and record it."""
    ensure_dir(relays_dir(fleet))
    with open(log_path(fleet, host), "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)
    record(fleet, host, {"pid": proc.pid, "source": source_for(fleet, host), "port": SANDBOX_PORT, "up": False})
    return proc.pid


def wait_up(fleet: str, host: str, pid: int, timeout: float) -> str | None:
    """None once the relay `pid` reports its backhaul up; else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = read(fleet, host) or {}
        if rec.get("pid") == pid and rec.get("up"):
            return None
        if not _alive(pid):
            return f"the relay exited; see {log_path(fleet, host)}"
        time.sleep(0.1)
    rec = read(fleet, host) or {}
    return f"the relay did not come up within {timeout:g}s ({rec.get('error') or 'no error yet'}); see {log_path(fleet, host)}"


def stop(fleet: str, host: str, timeout: float = 5.0) -> bool:
    """Stop `fleet/host`'s relay (if it runs) and forget its record; False when none ran."""
    rec = read(fleet, host) or {}
    pid = rec.get("pid")
    was = isinstance(pid, int) and _alive(pid)
    if was:
        assert isinstance(pid, int)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (relays_dir(fleet) / f"{host}.json").unlink()
    return was
