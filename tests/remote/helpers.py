"""Small helpers for the remote-engine tests: this process's ssh children, forwards."""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path


def ssh_children(parent: int | None = None) -> list[int]:
    """Pids of the `ssh` processes whose parent is `parent` (this process by default)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == "ssh" and fields[0] != "Z" and int(fields[1]) == parent:
            found.append(int(pid))
    return found


def sshd_pid(remote) -> int:
    """The pid of the remote engine's sshd (kill it to make the engine unreachable; `up` starts it again)."""
    return int(Path(f"/var/lib/fleet-remote/{remote.name}/sshd.pid").read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def listening_in_netns(netns: str, addr: str) -> bool:
    """Whether something listens on `addr` (ip:port) inside the network namespace."""
    r = subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", "ss", "-Hltn"], capture_output=True, text=True)
    return any(addr in line.split() for line in r.stdout.splitlines())


def _true(predicate) -> bool:
    try:
        return bool(predicate())
    except OSError:
        return False


@contextmanager
def ssh_forward(alias: str, *forward: str, ready=None, timeout: float = 20):
    """`ssh -N -o ExitOnForwardFailure=yes FORWARD... ALIAS` for the block; `ready()`
    is polled until true (the forward is up)."""
    proc = subprocess.Popen(
        ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ControlPath=none", *forward, alias],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while ready is not None and not _true(ready):
            if proc.poll() is not None:
                raise AssertionError(f"ssh {' '.join(forward)} {alias} exited: {proc.stderr.read() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise AssertionError(f"ssh {' '.join(forward)} {alias}: not up within {timeout}s")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
