"""Requests through the routing proxy to an agent on a remote engine (over the
proxy daemon's ssh link) against one on the local engine (a benchmark, not a
test).

Needs a remote engine reachable as `ssh NAME` (scripts/remote-engine.sh up NAME
on one machine: the "network" is a veth pair, so the figures are the cost of
ssh and SOCKS themselves, not of a real network). One container per engine
serves HTTP with python3 -m http.server; routes are written to a temporary
FLEET_HOME and the real proxy daemon serves them. Printed: median and p90 of
sequential requests on one kept-alive connection and on a new connection each,
the time the link takes to come up, and the time from killing its ssh to the
route answering again.

    .venv/bin/python bench/remote_link_bench.py --engine NAME [--requests 300] [--image fleet-base:bookworm]
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conn(http.client.HTTPConnection):
    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), 10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def get(conn: http.client.HTTPConnection, host: str) -> int:
    conn.request("GET", "/", headers={"Host": host})
    r = conn.getresponse()
    r.read()
    return r.status


def timed(host: str, port: int, n: int, keep: bool) -> list[float]:
    out = []
    conn = Conn(host, port)
    for _ in range(n):
        if not keep:
            conn = Conn(host, port)
        t = time.perf_counter()
        assert get(conn, host) == 200
        out.append((time.perf_counter() - t) * 1000)
        if not keep:
            conn.close()
    conn.close()
    return out


def show(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    print(f"  {label:<34} median {statistics.median(ms):6.2f} ms   p90 {ms[int(len(ms) * 0.9)]:6.2f} ms   (n={len(ms)})")


def link(engine: str) -> dict:
    from reconciler.routing.process import read_state

    return ((read_state() or {}).get("links") or {}).get(engine) or {}


def wait(pred, timeout: float = 60) -> float:
    t = time.perf_counter()
    while not pred():
        if time.perf_counter() - t > timeout:
            raise SystemExit("timed out")
        time.sleep(0.01)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True, help="the ssh alias of a remote engine (scripts/remote-engine.sh up NAME)")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--image", default="fleet-base:bookworm")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fleet-remote-bench-"))
    os.environ["FLEET_HOME"] = str(home)
    import docker

    from reconciler.core.model import Route
    from reconciler.routing import daemon
    from reconciler.routing.table import Listen, set_fleet_routes

    engine = f"ssh://{args.engine}"
    local = docker.from_env()
    from reconciler.providers.base import get_provider

    remote = get_provider(f"docker@{engine}").client  # type: ignore[attr-defined]  (over its one ssh connection)
    name = "bench-" + uuid.uuid4().hex[:8]
    cmd = ["sh", "-c", "cd /tmp && exec python3 -m http.server 8000"]
    made = []
    try:
        for client in (local, remote):
            made.append((client, client.containers.run(args.image, cmd, name=name, detach=True, labels={"dev.fleet.bench": name})))
        addrs = []
        for client, c in made:
            wait(lambda: c.exec_run(["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/')"]).exit_code == 0)
            c.reload()
            addrs.append(c.attrs["NetworkSettings"]["IPAddress"])
        port = free_port()
        routes = [Route(agent="local", service="web", container_port=8000, target=f"http://{addrs[0]}:8000", tls=False),
                  Route(agent="remote", service="web", container_port=8000, target=f"http://{addrs[1]}:8000", tls=False,
                        engine=engine)]
        set_fleet_routes("bench", [Listen(port=port)], routes)
        t0 = time.perf_counter()
        daemon.start()
        up = wait(lambda: link(engine).get("up")) + 0  # from the daemon answering to the link up
        print(f"proxy daemon started and its link to {engine} up in {time.perf_counter() - t0:.2f} s (link: {up:.2f} s after start)")
        for agent in ("local", "remote"):
            timed(f"web.{agent}.localhost", port, 20, True)  # warm
        print("requests through the routing proxy (GET / of python's http.server, sequential):")
        for agent in ("local", "remote"):
            show(f"{agent}, one kept-alive connection", timed(f"web.{agent}.localhost", port, args.requests, True))
            show(f"{agent}, a new connection each", timed(f"web.{agent}.localhost", port, max(50, args.requests // 3), False))
        backs = []
        for _ in range(3):
            pid = link(engine)["pid"]
            t = time.perf_counter()
            os.kill(pid, signal.SIGKILL)

            def answers() -> bool:
                try:
                    c = Conn("web.remote.localhost", port)
                    ok = get(c, "web.remote.localhost") == 200
                    c.close()
                    return ok
                except OSError:
                    return False

            wait(lambda: link(engine).get("pid") not in (None, pid) and answers())
            backs.append(time.perf_counter() - t)
        print(f"ssh killed -> the route answers again: {', '.join(f'{b:.2f} s' for b in backs)}")
    finally:
        daemon.stop()
        for _client, c in made:
            c.remove(force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
