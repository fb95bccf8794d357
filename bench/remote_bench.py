"""A no-op `fleet apply` on a remote engine against the same on the local one (a
benchmark, not a test; issue 16).

The same fleet of N private agents (default 20, each `engine: ssh://NAME`, one
engine) runs on a remote engine of its own: a second dockerd behind sshd in a
network namespace, started here with `scripts/remote-engine.sh up NAME` and
removed at the end with `down --purge NAME` (an engine of that name already up is
used and left up). Its twin without `engine:` runs on the local engine. After a
cold apply of each, no-op applies alternate between the two; medians and the
ratio remote/local are printed.

Counted on a no-op apply, per engine:
  ssh processes   every `ssh` the command starts (a wrapper first on PATH logs
                  each run): one per engine, for the life of the command
  API calls       requests on each engine's socket (the command runs under a
                  counting shim, --counted): a constant number per engine, the
                  same at N/4 agents as at N

    .venv/bin/python bench/remote_bench.py [--agents 20] [--rounds 5] [--engine-name bench] [--image fleet-base:bookworm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "remote-engine.sh"


def counted(out: str, args: list[str]) -> None:
    """Run the fleet CLI in this process, counting the HTTP requests per Docker socket."""
    import atexit
    import runpy
    from collections import Counter

    import requests.sessions

    calls: Counter = Counter()
    send = requests.sessions.Session.send

    def counting(self, request, **kw):  # type: ignore[no-untyped-def]
        adapter = getattr(self, "_custom_adapter", None)
        calls[str(getattr(adapter, "socket_path", None) or getattr(self, "base_url", "?"))] += 1
        return send(self, request, **kw)

    requests.sessions.Session.send = counting  # type: ignore[method-assign]
    atexit.register(lambda: Path(out).write_text(json.dumps(calls)))
    sys.argv = ["fleet", *args]
    runpy.run_module("reconciler", run_name="__main__", alter_sys=True)


def fleet_yaml(fleet: str, image: str, n: int, engine: str | None) -> str:
    on = f"engine: {engine}" if engine else ""
    lines = [f"fleet: {fleet}", f"defaults: {{image: {image}, command: [sleep, infinity]}}", "agents:"]
    lines += [f"  a{i:02d}: {{{on}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


class Side:
    """One fleet (local or remote), its own directory and FLEET_HOME."""

    def __init__(self, tmp: Path, name: str, engine: str | None, env: dict):
        self.dir = tmp / name
        self.dir.mkdir()
        self.path = self.dir / "fleet.yaml"
        self.name = name
        self.engine = engine
        self.log = tmp / f"{name}.ssh.log"
        self.env = dict(env, FLEET_HOME=str(self.dir / "home"), FLEET_BENCH_SSH_LOG=str(self.log))

    def write(self, image: str, n: int) -> None:
        self.path.write_text(fleet_yaml(self.name, image, n, self.engine))

    def fleet(self, *args: str, expect: str | None = None) -> tuple[float, str]:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "reconciler", *args, str(self.path)], cwd=self.dir, env=self.env,
                           capture_output=True, text=True, timeout=900)
        took = time.perf_counter() - t0
        if p.returncode != 0 or (expect and expect not in p.stdout):
            raise SystemExit(f"fleet {' '.join(args)} ({self.name}) exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return took, p.stdout

    def noop_counts(self) -> tuple[int, dict[str, int]]:
        """ssh processes started and API calls per socket during one no-op apply."""
        self.log.write_text("")
        out = self.dir / "calls.json"
        p = subprocess.run([sys.executable, __file__, "--counted", str(out), "--", "apply", "--yes", str(self.path)],
                           cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0 or "is up to date" not in p.stdout:
            raise SystemExit(f"counted no-op apply ({self.name}) exited {p.returncode}:\n{p.stdout}{p.stderr}")
        ssh = len([ln for ln in self.log.read_text().splitlines() if ln.strip()])
        raw = json.loads(out.read_text())
        calls = {("remote" if "fleet-engine-" in k else "local"): v for k, v in raw.items()}
        return ssh, calls


def ssh_wrapper(bindir: Path) -> None:
    real = shutil.which("ssh")
    if real is None:
        raise SystemExit("no ssh on PATH (scripts/remote-engine.sh installs openssh-client)")
    bindir.mkdir()
    w = bindir / "ssh"
    w.write_text(f'#!/bin/sh\necho "$$ $*" >>"$FLEET_BENCH_SSH_LOG"\nexec {real} "$@"\n')
    w.chmod(0o755)


def engine_up(name: str, image: str) -> bool:
    """Start the remote engine; False when one of that name was already up (kept)."""
    up = subprocess.run(["bash", str(SCRIPT), "status", name], capture_output=True, text=True).returncode == 0
    # `up` is idempotent; it also loads the image when that engine lacks it
    r = subprocess.run(["bash", str(SCRIPT), "up", name], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, FLEET_BASE_IMAGE=image))
    if r.returncode != 0:
        if not up:
            subprocess.run(["bash", str(SCRIPT), "down", "--purge", name], capture_output=True, timeout=300)
        raise SystemExit(f"scripts/remote-engine.sh up {name} failed:\n{r.stdout}{r.stderr}")
    return not up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5, help="no-op applies of each side")
    ap.add_argument("--engine-name", default="bench", help="the remote engine (and its ssh alias)")
    ap.add_argument("--image", default=os.environ.get("FLEET_BASE_IMAGE", "fleet-base:bookworm"))
    ap.add_argument("--counted", default=None, help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.counted:
        counted(args.counted, args.rest)
        return 0
    run = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="fleet-remote-bench-"))
    ssh_wrapper(tmp / "bin")
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", PATH=f"{tmp / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    n, small = args.agents, max(1, args.agents // 4)
    print(f"remote engine {args.engine_name}: starting (scripts/remote-engine.sh up) ...", flush=True)
    ours = engine_up(args.engine_name, args.image)
    local = Side(tmp, f"bl{run}", None, env)
    remote = Side(tmp, f"br{run}", f"ssh://{args.engine_name}", env)
    sides = (local, remote)
    samples: dict[str, list[float]] = {"local": [], "remote": []}
    cold: dict[str, float] = {}
    counts: dict[str, dict] = {}
    try:
        for key, side in zip(("local", "remote"), sides):  # calls at N/4, then N: the same when constant
            side.write(args.image, small)
            side.fleet("apply", "--yes")
            counts[f"{key}_small"] = dict(zip(("ssh", "calls"), side.noop_counts()))
            side.write(args.image, n)
            cold[key] = side.fleet("apply", "--yes")[0]
            counts[key] = dict(zip(("ssh", "calls"), side.noop_counts()))
        ssh_max = 0
        for i in range(args.rounds):
            for key, side in zip(("local", "remote"), sides if i % 2 == 0 else sides[::-1]):
                side.log.write_text("")
                took, _ = side.fleet("apply", "--yes", expect="is up to date")
                samples[key].append(took)
                if key == "remote":
                    ssh_max = max(ssh_max, len(side.log.read_text().splitlines()))
    finally:
        for side in sides:
            if side.path.exists():
                subprocess.run([sys.executable, "-m", "reconciler", "destroy", "--yes", str(side.path)], cwd=side.dir,
                               env=side.env, capture_output=True, timeout=600)
        if ours:
            subprocess.run(["bash", str(SCRIPT), "down", "--purge", args.engine_name], capture_output=True, timeout=600)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    r, l = counts["remote"], counts["local"]
    rs, ls = counts["remote_small"], counts["local_small"]
    print(f"agents                   {n} private agents on one engine (remote: each engine: ssh://{args.engine_name})")
    print(f"no-op apply local        {med['local'] * 1000:.0f} ms")
    print(f"no-op apply remote       {med['remote'] * 1000:.0f} ms")
    print(f"ratio remote/local       {med['remote'] / med['local']:.2f}")
    print(f"ssh processes remote     {r['ssh']}   (at {small} agents: {rs['ssh']}; most in a timed no-op: {ssh_max}; "
          f"local fleet: {l['ssh']})")
    print(f"api calls remote engine  {r['calls'].get('remote', 0)}   (at {small} agents: {rs['calls'].get('remote', 0)})")
    print(f"api calls local engine   {l['calls'].get('local', 0)}   (at {small} agents: {ls['calls'].get('local', 0)}; "
          f"remote fleet's own local calls: {r['calls'].get('local', 0)})")
    print(f"cold apply               local {cold['local']:.2f} s, remote {cold['remote']:.2f} s")
    print(f"(medians of {args.rounds} alternating no-op applies, each a whole `fleet apply --yes` including Python start-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
