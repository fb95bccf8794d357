"""Joining a running shared host, with a port against without one (a benchmark,
not a test).

A fleet with a shared Docker host `box` and a neighbour `n` (with a port) is
applied once. Then, per round, one agent joins the host without a port and
leaves again, and one joins with a port and leaves again; each `fleet apply
--yes` is timed from start to exit (which, with a port, includes the proxy
acknowledging the new route table). The neighbour's container id and start time
are checked after every step: a join or leave that restarted it is reported.

    .venv/bin/python bench/join_bench.py [--rounds 5] [--image fleet-base:bookworm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_yaml(fleet: str, image: str, proxy: int, extra: str | None, with_port: bool) -> str:
    text = (
        f"fleet: {fleet}\nproxy: {{port: {proxy}}}\ndefaults: {{image: {image}, command: [sleep, infinity]}}\n"
        "hosts:\n  box: {}\nagents:\n  n: {host: box, ports: {web: 3000}}\n"
    )
    if extra:
        text += f"  {extra}: {{host: box{', ports: {web: 3001}' if with_port else ''}}}\n"
    return text


def fleet(*args: str, cwd: Path, env: dict) -> float:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=cwd, env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fleet {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return took


def neighbour(name: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name],
                          capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", default=os.environ.get("FLEET_BASE_IMAGE", "fleet-base:bookworm"))
    args = ap.parse_args()
    name = "bj" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="fleet-join-bench-"))
    env = dict(os.environ, FLEET_HOME=str(tmp / "home"), NO_COLOR="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    path = tmp / "fleet.yaml"
    proxy = free_port()
    samples: dict[str, list[float]] = {"join": [], "join_port": [], "leave": [], "leave_port": []}
    restarted = 0
    try:
        path.write_text(fleet_yaml(name, args.image, proxy, None, False))
        fleet("apply", "--yes", cwd=tmp, env=env)
        holder = subprocess.run(["docker", "ps", "-q", "--filter", f"label=dev.fleet.project={name}",
                                 "--filter", "label=dev.fleet.agent=n"], capture_output=True, text=True).stdout.strip()
        before = neighbour(holder)
        for i in range(args.rounds):
            for with_port in (False, True) if i % 2 == 0 else (True, False):
                key = "join_port" if with_port else "join"
                path.write_text(fleet_yaml(name, args.image, proxy, f"j{i}{'p' if with_port else ''}", with_port))
                samples[key].append(fleet("apply", "--yes", cwd=tmp, env=env))
                restarted += neighbour(holder) != before
                path.write_text(fleet_yaml(name, args.image, proxy, None, False))
                samples[key.replace("join", "leave")].append(fleet("apply", "--yes", cwd=tmp, env=env))
                restarted += neighbour(holder) != before
    finally:
        subprocess.run([sys.executable, "-m", "reconciler", "destroy", "--yes", str(path)], cwd=tmp, env=env,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "reconciler", "proxy", "stop"], cwd=tmp, env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"join without a port      {med['join'] * 1000:.0f} ms")
    print(f"join with a port         {med['join_port'] * 1000:.0f} ms")
    print(f"leave without a port     {med['leave'] * 1000:.0f} ms")
    print(f"leave with a port        {med['leave_port'] * 1000:.0f} ms")
    print(f"neighbour restarts       {restarted}")
    print(f"(medians of {args.rounds} rounds, each a whole `fleet apply --yes` including Python start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
