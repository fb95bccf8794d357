"""Figures for one remote engine (not a test; timings are never asserted):

    .venv/bin/python -m tests.remote.measure NAME [N]

NAME is an ssh alias of a remote engine (`make remote-engine` makes `fleet-remote`).
Prints the median and spread of: connecting (EngineConnection.open: ssh + the
version handshake); one list call over the kept connection; and one list call with
a fresh `docker.DockerClient(base_url="ssh://NAME", use_ssh_client=True)` (what
the SDK does by itself: an ssh per client; needs paramiko importable).
"""

from __future__ import annotations

import statistics
import sys
import time

from reconciler.providers.docker.connect import EngineConnection, parse_engine


def _row(label: str, xs: list[float]) -> str:
    xs = sorted(xs)
    return (f"{label:<52} median {statistics.median(xs) * 1000:8.1f} ms   "
            f"min {xs[0] * 1000:7.1f}   max {xs[-1] * 1000:7.1f}   (n={len(xs)})")


def main(name: str, n: int = 20) -> None:
    import docker

    address = parse_engine(f"ssh://{name}")
    assert not isinstance(address, str), address
    connects = []
    for _ in range(max(5, n // 4)):
        t = time.perf_counter()
        conn = EngineConnection(address, name=name).open()
        connects.append(time.perf_counter() - t)
        conn.close()
    kept = []
    with EngineConnection(address, name=name) as conn:
        conn.api.containers(all=True)  # warm
        for _ in range(n):
            t = time.perf_counter()
            conn.api.containers(all=True)
            kept.append(time.perf_counter() - t)
        ssh_processes = conn.connects
    fresh = []
    for _ in range(n):
        t = time.perf_counter()
        client = docker.DockerClient(base_url=f"ssh://{name}", use_ssh_client=True)
        client.api.containers(all=True)
        client.close()
        fresh.append(time.perf_counter() - t)
    pinned = []
    for _ in range(n):
        t = time.perf_counter()
        client = docker.DockerClient(base_url=f"ssh://{name}", use_ssh_client=True, version="1.41")
        client.api.containers(all=True)
        client.close()
        pinned.append(time.perf_counter() - t)
    print(_row("connect (ssh -L + version handshake)", connects))
    print(_row(f"list call, kept connection ({ssh_processes} ssh for {n} calls)", kept))
    print(_row("list call, fresh DockerClient(ssh://, use_ssh_client)", fresh))
    print(_row("  the same with version pinned (no version call)", pinned))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
