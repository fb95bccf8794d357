"""A granted HTTPS request from an agent on a remote engine (back over the proxy
daemon's ssh link to this machine's forward proxy) against one from a local
agent (a benchmark, not a test).

Needs a remote engine reachable as `ssh NAME` (scripts/remote-engine.sh up NAME
on one machine: a veth pair, so the figures are the cost of ssh itself). A fake
HTTPS upstream runs here (FLEET_RESOLVE, FLEET_UPSTREAM_CA, as in the grants
tests); `fleet apply` makes one agent per engine holding the grant; each runs
curl N times (a new connection, CONNECT, the interception TLS and the upstream
request each time) and curl's own `time_total` is reported.

    .venv/bin/python bench/remote_grants_bench.py --engine NAME [--requests 40] [--image fleet-base:bookworm]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", required=True)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--image", default="fleet-base:bookworm")
    args = ap.parse_args()
    from reconciler.grants.forward import bridge_gateway
    from tests.grants.helpers import Upstream

    tmp = Path(tempfile.mkdtemp(prefix="fleet-remote-grants-bench-"))
    up = Upstream(tmp / "ca", names=("api.github.com",))
    gw = bridge_gateway()
    assert gw
    env = dict(os.environ, FLEET_HOME=str(tmp / "home"), FLEET_KEYRING="off", NO_COLOR="1",
               FLEET_RESOLVE=f"api.github.com=127.0.0.1:{up.port}", FLEET_UPSTREAM_CA=up.ca_file,
               FLEET_GRANTS_PORT=str(free_on(gw)))
    name = "gb" + uuid.uuid4().hex[:8]
    (tmp / "fleet.yaml").write_text(
        f"fleet: {name}\nproxy: {{port: {free_on('127.0.0.1')}}}\n"
        f"defaults: {{image: {args.image}, command: [sleep, infinity], grants: [github]}}\n"
        f"agents:\n  here: {{}}\n  there: {{engine: 'ssh://{args.engine}'}}\n")

    def fleet(*a: str, input: str | None = None) -> None:
        r = subprocess.run([sys.executable, "-m", "reconciler", *a], cwd=tmp, env=env, input=input,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"fleet {' '.join(a)}: {r.stdout}{r.stderr}")

    try:
        fleet("grant", "set", "github", input="ghp_bench\n")
        fleet("apply", "--yes")
        loop = (f"for i in $(seq {args.requests}); do curl -s -o /dev/null -w '%{{time_total}}\\n' "
                "https://api.github.com/echo/x; done")
        print(f"granted HTTPS requests (curl time_total, a new connection each, n={args.requests}):")
        for agent in ("here", "there"):
            r = subprocess.run([sys.executable, "-m", "reconciler", "exec", agent, "--", "sh", "-c", loop],
                               cwd=tmp, env=env, capture_output=True, text=True)
            ms = sorted(float(x) * 1000 for x in r.stdout.split() if x.replace(".", "").isdigit())
            if len(ms) != args.requests:
                raise SystemExit(f"{agent}: {r.stdout[-300:]}{r.stderr[-300:]}")
            where = "local engine" if agent == "here" else f"ssh://{args.engine}, via the link"
            print(f"  {where:<34} median {statistics.median(ms):6.1f} ms   p90 {ms[int(len(ms) * 0.9)]:6.1f} ms")
        print(f"  upstream saw {len(up.requests)} requests")
    finally:
        subprocess.run([sys.executable, "-m", "reconciler", "destroy", "--yes"], cwd=tmp, env=env, capture_output=True)
        subprocess.run([sys.executable, "-m", "reconciler", "proxy", "stop"], cwd=tmp, env=env, capture_output=True)
        up.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
