"""Backhaul benchmark: a sandbox reaching this machine through the relay vs directly.

Not a test: it measures, on the fake Modal control plane (tests/fakes/modal, a
sandbox is a Docker container; its exec stdio travels over the fake's gRPC
router and Docker's exec streams, so absolute figures are the fake's, not
Modal's). One HTTP server listens on the Docker bridge's gateway, so the
container can reach it directly too; the backhaul's local side dials the same
server. From inside the sandbox:

- 10 MB down (GET) and 10 MB up (POST), `curl` time, direct vs `-x` the relay;
- small requests, python http.client: one keep-alive connection (N requests in
  a row) and a fresh connection per request: p50 / p99 latency.

Medians over the rounds, written to bench/results/backhaul.json. Usage:
    .venv/bin/python bench/backhaul_bench.py [--rounds 3] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MODAL_CONFIG_PATH", "/nonexistent")

from reconciler.providers.modal.backhaul import Backhaul, modal_opener  # noqa: E402

BIG = os.urandom(1 << 20) * 10
RELAY_PORT = 3128

PROBE = r'''
import http.client, sys, time, json
host, port, path_host, n, fresh = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
times = []
conn = None
for i in range(n):
    t = time.perf_counter()
    if conn is None or fresh:
        conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path_host + "/small")
    r = conn.getresponse(); r.read()
    times.append(time.perf_counter() - t)
    if fresh:
        conn.close()
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2] * 1000, "p99_ms": times[int(len(times) * 0.99) - 1] * 1000}))
'''


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        body = BIG if self.path.endswith("/big") else b"small answer\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        left = int(self.headers["Content-Length"])
        while left:
            left -= len(self.rfile.read(min(left, 1 << 20)))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


async def sh(sb: Any, *argv: str) -> str:
    p = await sb.exec.aio(*argv, text=True, timeout=300)
    out = await p.stdout.read.aio()
    err = await p.stderr.read.aio()
    code = await p.wait.aio()
    if code:
        raise RuntimeError(f"{argv[:3]} -> {code}: {err}")
    return out


async def measure(sb: Any, gw: str, port: int, requests: int, rounds: int) -> dict[str, Any]:
    direct = f"http://{gw}:{port}"
    relay = f"-x http://127.0.0.1:{RELAY_PORT}"
    await sh(sb, "sh", "-c", "head -c 10485760 /dev/urandom >/tmp/up")
    results: dict[str, dict[str, list[float]]] = {}

    def add(name: str, via: str, value: float) -> None:
        results.setdefault(name, {}).setdefault(via, []).append(value)

    for _ in range(rounds):
        for via, proxy in (("direct", ""), ("relay", relay)):
            t = float(await sh(sb, "sh", "-c", f"curl -sS {proxy} -o /dev/null -w '%{{time_total}}' {direct}/big"))
            add("10MB down MB/s", via, 10.0 / t)
            t = float(await sh(sb, "sh", "-c", f"curl -sS {proxy} --data-binary @/tmp/up -o /dev/null "
                                              f"-w '%{{time_total}}' {direct}/sink"))
            add("10MB up MB/s", via, 10.0 / t)
            host, hport = (gw, str(port)) if via == "direct" else ("127.0.0.1", str(RELAY_PORT))
            prefix = "" if via == "direct" else direct
            for fresh in ("0", "1"):
                r = json.loads(await sh(sb, "python3", "-c", PROBE, host, hport, prefix, str(requests), fresh))
                kind = "fresh connection" if fresh == "1" else "keep-alive"
                add(f"small request {kind} p50 ms", via, r["p50_ms"])
                add(f"small request {kind} p99 ms", via, r["p99_ms"])
    return {name: {via: round(statistics.median(v), 2) for via, v in by.items()} for name, by in results.items()}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import modal

    from tests.fakes.modal import FakeModal

    gw = subprocess.run(["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
                        capture_output=True, text=True, check=True).stdout.strip()
    server = http.server.ThreadingHTTPServer((gw, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    fake = FakeModal("fleet-base:bookworm").start()
    try:
        for k, v in fake.env().items():
            os.environ[k] = v
        client = modal.Client.from_credentials(fake.token_id, fake.token_secret)
        app = await modal.App.lookup.aio("backhaul-bench", create_if_missing=True, client=client)
        sb = await modal.Sandbox.create.aio(app=app, image=modal.Image.from_registry("python:3.12-slim"),
                                            client=client, timeout=1200)
        bh = Backhaul(modal_opener(sb), (gw, port), RELAY_PORT)
        task = asyncio.ensure_future(bh.run())
        await asyncio.wait_for(bh.up.wait(), 60)
        try:
            return await measure(sb, gw, port, args.requests, args.rounds)
        finally:
            task.cancel()
            await sb.terminate.aio()
    finally:
        fake.stop()
        server.shutdown()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    out = asyncio.run(main(a))
    print(f"{'':40} {'direct':>10} {'relay':>10}")
    for name, by in out.items():
        print(f"{name:40} {by['direct']:>10} {by['relay']:>10}")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "backhaul.json").write_text(json.dumps(out, indent=2) + "\n")
