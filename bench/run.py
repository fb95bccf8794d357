"""`make bench`: fleet measured side by side with its peers, in one run.

Scenarios (issue 9), each with its peer in the same run, repeated, medians:

1. cold apply of N agents (private hosts, a tiny busybox image):
   `fleet apply --yes --parallel P` vs `docker-compose up -d` of an equivalent
   compose file vs the floor (bench/floor.py: the Docker SDK creating and
   starting the same containers with a thread pool, no reconciler);
2. no-op `fleet apply` and `fleet diff` vs `docker-compose up -d` with nothing to do;
3. one agent changed among the largest N: time to converge, fleet vs compose;
4. the routing proxy vs nginx vs direct (bench/proxy_bench.py, the routing benchmark);
5. watch latency (bench/watch_bench.py, the watch benchmark);
6. peak memory: max RSS of `fleet apply` (and of docker-compose) from wait4,
   and VmHWM of the proxy daemon serving N routes;
7. an agent joining (and leaving) a running shared host with a port against
   without one, and whether the neighbour restarted (bench/join_bench.py);
8. a no-op apply of 20 agents on a remote engine (a second dockerd behind sshd,
   started and removed by the benchmark) against the same on the local engine,
   and the ssh processes and API calls per engine it takes (bench/remote_bench.py).

Tools run in a rotating order in every repetition, so drift in the machine's
load hits all of them alike. A table of medians, ratios and pass/miss against
the issue's targets is printed and written as JSON to bench/results/. A missed
target never fails the command: timings are measurements, not assertions.
Everything created carries a unique run id and is removed at the end, also on
Ctrl-C or SIGTERM.

    .venv/bin/python bench/run.py            # the full run (N = 10 and 100)
    .venv/bin/python bench/run.py --quick    # small N, one repetition: to try it out
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

TINY = "fleet-bench-tiny"
COMPOSE_TIMEOUT = 600  # compose v1 can hang for good (see Workspace.compose_env)
PY = sys.executable

# -- processes ------------------------------------------------------------------------------

_children: set[subprocess.Popen] = set()


@dataclass
class Sample:
    seconds: float
    maxrss_kib: int
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def run_timed(cmd: list[str], env: dict | None = None, timeout: float = 900, cwd: Path | None = None) -> Sample:
    """Run `cmd`, returning its wall time and its own peak RSS (wait4's rusage
    is per process, unlike RUSAGE_CHILDREN, which is the max over all children)."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT)
        _children.add(proc)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        _children.discard(proc)  # still listed when interrupted: stop_children() ends it
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Sample(seconds, int(usage.ru_maxrss), proc.returncode, text)


def stop_children() -> None:
    """SIGINT first (the benchmarks below clean up after themselves), then kill."""
    for proc in list(_children):
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    for proc in list(_children):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except (subprocess.TimeoutExpired, ChildProcessError):
            proc.kill()
    _children.clear()


# -- Docker ---------------------------------------------------------------------------------


def docker_client():
    import docker

    return docker.from_env(max_pool_size=16, timeout=300)


def ensure_tiny_image(client) -> str:
    """`fleet-bench-tiny`: FROM scratch with Debian's static busybox (built once)."""
    from docker.errors import ImageNotFound

    try:
        client.api.inspect_image(TINY)
        return TINY
    except ImageNotFound:
        pass
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise SystemExit("no /bin/busybox: apt-get install busybox-static (make bench does it)")
    dockerfile = (
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        'CMD ["sleep", "infinity"]\n'
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        tar.add(str(busybox), arcname="busybox")
    buf.seek(0)
    print(f"building {TINY} (FROM scratch + static busybox) ...", flush=True)
    for chunk in client.api.build(fileobj=buf, custom_context=True, tag=TINY, rm=True, forcerm=True, decode=True):
        if "error" in chunk:
            raise SystemExit(f"building {TINY} failed: {chunk['error'].strip()} (is /bin/busybox static? apt-get install busybox-static)")
    return TINY


def remove_where(client, filters: dict, parallel: int = 8) -> int:
    """Force-remove every container matching `filters` (not timed)."""
    from docker.errors import APIError, NotFound

    ids = [c["Id"] for c in client.api.containers(all=True, filters=filters)]

    def rm(cid: str) -> None:
        try:
            client.api.remove_container(cid, force=True)
        except NotFound:
            pass
        except APIError as exc:
            if "already in progress" not in str(exc):
                raise

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(rm, ids))
    return len(ids)


def ids_where(client, filters: dict) -> dict[str, str]:
    """container name -> id."""
    return {c["Names"][0].lstrip("/"): c["Id"] for c in client.api.containers(all=True, filters=filters)}


# -- the three ways to bring up N agents ----------------------------------------------------


def fleet_yaml(name: str, n: int, changed: int = 0) -> str:
    lines = [f"fleet: {name}", "defaults:", f"  image: {TINY}", '  command: ["sleep", "infinity"]', "agents:"]
    for i in range(n):
        if i == 0 and changed:
            lines.append(f'  a{i}: {{env: {{CHANGED: "{changed}"}}}}')
        else:
            lines.append(f"  a{i}: {{}}")
    return "\n".join(lines) + "\n"


def compose_yaml(project: str, n: int, run_id: str, changed: int = 0) -> str:
    """What fleet creates, said in compose: same image, command, env, restart
    policy, init, tty, extra host; the default bridge (no project network)."""
    out = ['version: "2.4"', "services:"]
    for i in range(n):
        env = {"FLEET_NAME": project, "FLEET_AGENT": f"a{i}", "FLEET_HOST": f"a{i}"}
        if i == 0 and changed:
            env["CHANGED"] = str(changed)
        out += [
            f"  a{i}:",
            f"    image: {TINY}",
            '    command: ["sleep", "infinity"]',
            "    network_mode: bridge",
            "    restart: always",
            "    init: true",
            "    tty: true",
            "    stdin_open: true",
            f"    hostname: a{i}",
            '    extra_hosts: ["fleet-proxy:host-gateway"]',
            f"    environment: {json.dumps(env)}",
            f'    labels: {{"dev.fleet.test": "1", "dev.fleet.bench": "{run_id}"}}',
        ]
    return "\n".join(out) + "\n"


@dataclass
class Workspace:
    """Names and files of one run; everything here is removed at the end."""

    run_id: str
    tmp: Path
    parallel: int
    compose: str | None
    fleets: set[str] = field(default_factory=set)
    projects: set[str] = field(default_factory=set)

    @property
    def fleet_env(self) -> dict:
        return dict(os.environ, FLEET_HOME=str(self.tmp / "fleet-home"), NO_COLOR="1", COLUMNS="200")

    def compose_env(self, n: int) -> dict:
        # docker-compose v1 deadlocks when a project has more services than its
        # parallel limit (docker/compose#5864, #8226: 100 services at the default
        # limit of 64 hang for good), so it gets a limit above the service count:
        # as much concurrency as it can use.
        return dict(os.environ, COMPOSE_INTERACTIVE_NO_CLI="1", COMPOSE_PARALLEL_LIMIT=str(max(64, 2 * n)))

    def names(self, n: int) -> tuple[str, str, str]:
        fleet, project, floor = f"b{self.run_id}f{n}", f"b{self.run_id}c{n}", f"b{self.run_id}x{n}"
        self.fleets.add(fleet)
        self.projects.add(project)
        return fleet, project, floor

    def cleanup(self, client) -> None:
        for fleet in self.fleets:
            remove_where(client, {"label": f"dev.fleet.project={fleet}"})
        for project in self.projects:
            remove_where(client, {"label": f"com.docker.compose.project={project}"})
        remove_where(client, {"label": f"dev.fleet.bench={self.run_id}"})
        remove_where(client, {"name": f"b{self.run_id}"})  # anything else named after this run


class Tools:
    """Runs each tool on a workload of N agents and checks the result."""

    def __init__(self, ws: Workspace, client, n: int):
        self.ws, self.client, self.n = ws, client, n
        self.fleet, self.project, self.floor_prefix = ws.names(n)
        d = ws.tmp / f"n{n}"
        d.mkdir(parents=True, exist_ok=True)
        self.fleet_file = d / "fleet.yaml"
        self.compose_file = d / "docker-compose.yml"
        self.write(changed=0)

    def write(self, changed: int) -> None:
        self.fleet_file.write_text(fleet_yaml(self.fleet, self.n, changed))
        self.compose_file.write_text(compose_yaml(self.project, self.n, self.ws.run_id, changed))

    # filters
    def filters(self, tool: str) -> dict:
        return {
            "fleet": {"label": f"dev.fleet.project={self.fleet}"},
            "compose": {"label": f"com.docker.compose.project={self.project}"},
            "floor": {"label": f"dev.fleet.bench={self.ws.run_id}-{self.n}"},
        }[tool]

    def clean(self, tool: str) -> None:
        remove_where(self.client, self.filters(tool))

    def running(self, tool: str) -> dict[str, str]:
        return ids_where(self.client, {**self.filters(tool), "status": "running"})

    # commands
    def fleet_apply(self) -> Sample:
        return run_timed([PY, "-m", "reconciler", "apply", "--yes", "--parallel", str(self.ws.parallel), str(self.fleet_file)],
                         env=self.ws.fleet_env)

    def fleet_diff(self) -> Sample:
        return run_timed([PY, "-m", "reconciler", "diff", str(self.fleet_file)], env=self.ws.fleet_env)

    def compose_up(self) -> Sample:
        assert self.ws.compose
        s = run_timed([self.ws.compose, "-p", self.project, "-f", str(self.compose_file), "up", "-d"],
                      env=self.ws.compose_env(self.n), timeout=COMPOSE_TIMEOUT)
        if s.code == -signal.SIGKILL:
            print(f"  ! docker-compose did not finish within {COMPOSE_TIMEOUT} s (killed)", flush=True)
        return s

    def floor(self) -> Sample:
        return run_timed([PY, str(BENCH / "floor.py"), "--image", TINY, "--prefix", self.floor_prefix, "--n", str(self.n),
                          "--parallel", str(self.ws.parallel), "--label", f"dev.fleet.bench={self.ws.run_id}-{self.n}",
                          "--label", "dev.fleet.test=1"])

    def cold(self, tool: str) -> Sample:
        return {"fleet": self.fleet_apply, "compose": self.compose_up, "floor": self.floor}[tool]()


def check(sample: Sample, what: str, expect: str | None = None) -> Sample:
    if not sample.ok:
        tail = "\n".join(sample.output.strip().splitlines()[-8:])
        print(f"  ! {what} exited {sample.code}:\n{tail}", flush=True)
    elif expect and expect not in sample.output:
        print(f"  ! {what}: expected {expect!r} in its output:\n{sample.output[-600:]}", flush=True)
    return sample


# -- scenarios 1-3, 6a ----------------------------------------------------------------------


def reconcile_scenarios(ws: Workspace, client, ns: list[int], reps: int, noop_samples: int) -> dict:
    tools = ["fleet", "floor"] + (["compose"] if ws.compose else [])
    out: dict[str, Any] = {}
    biggest = max(ns)
    for n in ns:
        t = Tools(ws, client, n)
        rec: dict[str, list] = {k: [] for k in (
            "cold_fleet", "cold_floor", "cold_floor_engine", "cold_compose", "noop_fleet_apply", "noop_fleet_diff",
            "noop_compose", "change1_fleet", "change1_compose", "rss_fleet_cold", "rss_fleet_noop", "rss_compose_cold",
        )}
        for tool in tools:
            t.clean(tool)
        for rep in range(reps):
            order = tools[rep % len(tools):] + tools[: rep % len(tools)]
            for tool in order:
                print(f"N={n} rep {rep + 1}/{reps}: {tool} ...", flush=True)
                t.write(changed=0)
                s = check(t.cold(tool), f"{tool} cold N={n}")
                got = len(t.running(tool))
                if got != n:
                    print(f"  ! {tool} left {got} of {n} containers running", flush=True)
                rec[f"cold_{tool}"].append(s.seconds)
                if tool == "floor":
                    try:
                        rec["cold_floor_engine"].append(json.loads(s.output.strip().splitlines()[-1])["engine_s"])
                    except (ValueError, IndexError, KeyError):
                        pass
                if tool == "fleet":
                    rec["rss_fleet_cold"].append(s.maxrss_kib)
                    for _ in range(noop_samples):
                        a = check(t.fleet_apply(), "fleet no-op apply", expect="is up to date")
                        rec["noop_fleet_apply"].append(a.seconds)
                        rec["rss_fleet_noop"].append(a.maxrss_kib)
                        rec["noop_fleet_diff"].append(check(t.fleet_diff(), "fleet diff").seconds)
                if tool == "compose":
                    rec["rss_compose_cold"].append(s.maxrss_kib)
                    for _ in range(noop_samples):
                        rec["noop_compose"].append(check(t.compose_up(), "compose no-op up").seconds)
                if n == biggest and tool in ("fleet", "compose"):
                    before = t.running(tool)
                    t.write(changed=rep + 1)
                    s = check(t.fleet_apply() if tool == "fleet" else t.compose_up(), f"{tool} one changed")
                    rec[f"change1_{tool}"].append(s.seconds)
                    after = t.running(tool)
                    replaced = len(set(before.values()) - set(after.values()))
                    if replaced != 1 or len(after) != n:
                        print(f"  ! {tool}: one change replaced {replaced} containers ({len(after)} running)", flush=True)
                t.clean(tool)
        out[str(n)] = rec
    return out


# -- scenario 6b: the proxy's memory at N routes --------------------------------------------


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"hello from the backend: " + b"x" * 76 + b"\n"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


class _Backend(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def handle_error(self, request, client_address) -> None:  # wrk resets its connections at the end
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0])
    return out


def proxy_memory(ws: Workspace, routes: int, wrk_seconds: float) -> dict:
    """VmHWM of the real proxy daemon routing `routes` agents, after one round of
    requests to every route and (with wrk) a burst of 64 keep-alive connections."""
    import http.client

    home = ws.tmp / "proxy-home"
    saved = os.environ.get("FLEET_HOME")
    os.environ["FLEET_HOME"] = str(home)
    backend = _Backend(("127.0.0.1", 0), _Hello)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    from reconciler.routing import daemon
    from reconciler.routing.table import Route, set_fleet_routes

    port = free_port()
    try:
        target = f"http://127.0.0.1:{backend.server_address[1]}"
        set_fleet_routes(f"b{ws.run_id}p", [port],
                         [Route(agent=f"a{i}", service="web", container_port=3000, target=target) for i in range(routes)])
        pid = daemon.start()["pid"]
        idle = proc_status(pid)
        errors = 0
        for i in range(routes):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                for _ in range(3):
                    conn.request("GET", "/", headers={"Host": f"web.a{i}.localhost:{port}"})
                    resp = conn.getresponse()
                    resp.read()
                    errors += resp.status != 200
            finally:
                conn.close()
        if shutil.which("wrk") and wrk_seconds > 0:
            run_timed(["wrk", "-t1", "-c64", f"-d{wrk_seconds:g}s", "-H", f"Host: web.a0.localhost:{port}",
                       f"http://127.0.0.1:{port}/"])
        loaded = proc_status(pid)
        return {"routes": routes, "idle_rss_kib": idle.get("VmRSS", 0), "hwm_kib": loaded.get("VmHWM", 0),
                "rss_kib": loaded.get("VmRSS", 0), "errors": errors, "wrk_seconds": wrk_seconds if shutil.which("wrk") else 0}
    finally:
        try:
            daemon.stop()
        finally:
            backend.shutdown()
            backend.server_close()
            if saved is None:
                os.environ.pop("FLEET_HOME", None)
            else:
                os.environ["FLEET_HOME"] = saved


# -- scenarios 4 and 5: the colleagues' benchmarks ------------------------------------------


def proxy_scenario(ws: Workspace, quick: bool) -> dict | None:
    script = BENCH / "proxy_bench.py"
    if not script.exists():
        print("(skipped proxy throughput: bench/proxy_bench.py is not there)", flush=True)
        return None
    out = ws.tmp / "proxy.json"
    args = ["--duration", "1", "--rounds", "1", "--no-tls"] if quick else []
    print(f"proxy throughput: bench/proxy_bench.py {' '.join(args)} ...", flush=True)
    s = run_timed([PY, str(script), *args, "--out", str(out)], timeout=1800)
    if not s.ok or not out.exists():
        print(f"  ! proxy_bench.py exited {s.code}:\n{s.output[-1500:]}", flush=True)
        return None
    data = json.loads(out.read_text())
    data.pop("runs", None)
    return data


def _figures(name: str, what: str, rounds: int, patterns: dict[str, str], flags: int = 0) -> dict | None:
    """Run bench/NAME --rounds R --image TINY and read the integer figures `patterns` find
    in its output; None (said) when it fails or prints something else."""
    print(f"{what}: bench/{name} --rounds {rounds} --image {TINY} ...", flush=True)
    s = run_timed([PY, str(BENCH / name), "--rounds", str(rounds), "--image", TINY], timeout=1800)
    found = {k: re.search(rx, s.output, flags) for k, rx in patterns.items()}
    if not s.ok or not all(found.values()):
        print(f"  ! {name} exited {s.code} or printed something else:\n{s.output[-1500:]}", flush=True)
        return None
    return {"rounds": rounds, **{k: int(m.group(1)) for k, m in found.items() if m}}


_WATCH = {
    "apply_start_ms": r"save -> apply start\s+(-?\d+) ms",
    "agent_running_ms": r"save -> agent running\s+(-?\d+) ms",
    "docker_create_start_ms": r"docker create\+start\s+(-?\d+) ms",
    "overhead_over_create_ms": r"overhead over create\+start\s+(-?\d+) ms",
}


def watch_scenario(ws: Workspace, quick: bool) -> dict | None:
    script = BENCH / "watch_bench.py"
    if not script.exists():
        print("(skipped watch latency: bench/watch_bench.py is not there)", flush=True)
        return None
    return _figures("watch_bench.py", "watch latency", 2 if quick else 7, _WATCH)


_JOIN = {
    "join_ms": r"join without a port\s+(\d+) ms",
    "join_port_ms": r"join with a port\s+(\d+) ms",
    "leave_ms": r"leave without a port\s+(\d+) ms",
    "leave_port_ms": r"leave with a port\s+(\d+) ms",
    "neighbour_restarts": r"neighbour restarts\s+(\d+)",
}


def join_scenario(ws: Workspace, quick: bool) -> dict | None:
    """7. an agent joining a running shared host, with a port against without one."""
    return _figures("join_bench.py", "shared-host join", 2 if quick else 5, _JOIN)


_REMOTE = {
    "agents": r"^agents\s+(\d+)",
    "local_ms": r"no-op apply local\s+(\d+) ms",
    "remote_ms": r"no-op apply remote\s+(\d+) ms",
    "ssh": r"ssh processes remote\s+(\d+)",
    "ssh_small": r"ssh processes remote\s+\d+\s+\(at \d+ agents: (\d+)",
    "ssh_max": r"most in a timed no-op: (\d+)",
    "calls": r"api calls remote engine\s+(\d+)",
    "calls_small": r"api calls remote engine\s+\d+\s+\(at \d+ agents: (\d+)",
}


def remote_scenario(ws: Workspace, quick: bool) -> dict | None:
    """8. a no-op apply on a remote engine against the local one."""
    return _figures("remote_bench.py", "remote engine no-op", 2 if quick else 5, _REMOTE, re.M)


# -- the report -----------------------------------------------------------------------------


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclass
class Target:
    name: str
    value: str
    goal: str
    ok: bool | None  # None: could not be measured

    def row(self) -> str:
        mark = {True: "PASS", False: "MISS", None: "n/a"}[self.ok]
        return f"  {mark:<5} {self.name:<56} {self.value:>14}   target {self.goal}"


def summarise(rec: dict, proxy: dict | None, watch: dict | None, mem: dict | None,
              join: dict | None = None, remote: dict | None = None) -> tuple[dict, list[str], list[Target]]:
    lines: list[str] = []
    targets: list[Target] = []
    medians: dict[str, dict[str, float | None]] = {}
    ns = sorted(int(n) for n in rec)
    if ns:
        lines.append(f"{'scenario':<34} {'N':>4} {'fleet':>10} {'compose':>10} {'floor':>10}   ratios")
    for n in ns:
        r = rec[str(n)]
        m = {k: med(v) for k, v in r.items()}
        medians[str(n)] = m
        fl, co, fo = m["cold_fleet"], m["cold_compose"], m["cold_floor"]
        rf, rc = ratio(fl, fo), ratio(fl, co)
        row = f"{'1 cold apply':<34} {n:>4} {fmt_s(fl):>10} {fmt_s(co):>10} {fmt_s(fo):>10}   "
        row += ", ".join(x for x in (f"fleet/floor {rf:.2f}" if rf else "", f"fleet/compose {rc:.2f}" if rc else "") if x)
        lines.append(row)
        if m["cold_floor_engine"] is not None:
            lines[-1] += f"  (floor's engine work alone {m['cold_floor_engine']:.2f} s)"
        targets.append(Target(f"cold apply N={n}: fleet/floor", f"{rf:.3f}x" if rf else "-", "<= 1.15x", None if rf is None else rf <= 1.15))
        targets.append(Target(f"cold apply N={n}: fleet/compose", f"{rc:.3f}x" if rc else "-", "< 1.00x", None if rc is None else rc < 1.0))
        for key, label in (("noop_fleet_apply", "2 no-op apply"), ("noop_fleet_diff", "2 diff (nothing to do)")):
            v, c = m[key], m["noop_compose"]
            rr = ratio(v, c)
            lines.append(f"{label:<34} {n:>4} {fmt_s(v):>10} {fmt_s(c):>10} {'':>10}   " + (f"fleet/compose {rr:.2f}" if rr else ""))
            targets.append(Target(f"{label[2:]} N={n}: fleet/compose", f"{rr:.2f}x" if rr else "-", "<= 0.33x", None if rr is None else rr <= 1 / 3))
        if r["change1_fleet"]:
            v, c = m["change1_fleet"], m["change1_compose"]
            rr = ratio(v, c)
            lines.append(f"{'3 one agent changed':<34} {n:>4} {fmt_s(v):>10} {fmt_s(c):>10} {'':>10}   " + (f"fleet/compose {rr:.2f}" if rr else ""))
            targets.append(Target(f"one changed among {n}: fleet/compose (no issue target)", f"{rr:.2f}x" if rr else "-", "< 1.00x", None if rr is None else rr < 1.0))
    if len(ns) >= 2:
        lo, hi = medians[str(ns[0])], medians[str(ns[-1])]
        for key, label in (("noop_fleet_apply", "no-op apply"), ("noop_fleet_diff", "diff")):
            if lo[key] is not None and hi[key] is not None:
                g = hi[key] - lo[key]
                targets.append(Target(f"{label} growth N={ns[0]} -> {ns[-1]}", f"{g * 1000:+.0f} ms", "< 200 ms", g < 0.2))
    big = medians[str(ns[-1])] if ns else {}
    if big.get("rss_fleet_cold") is not None:
        comp = f", docker-compose {big['rss_compose_cold'] / 1024:.0f} MiB" if big["rss_compose_cold"] else ""
        lines.append(f"{'6 peak RSS, cold apply':<34} {ns[-1]:>4} {big['rss_fleet_cold'] / 1024:>6.0f} MiB"
                     f"   (no-op apply {big['rss_fleet_noop'] / 1024:.0f} MiB{comp})")
    if mem:
        lines.append(f"{'6 proxy VmHWM, ' + str(mem['routes']) + ' routes':<34} {mem['routes']:>4} {mem['hwm_kib'] / 1024:>6.0f} MiB"
                     f"   (idle {mem['idle_rss_kib'] / 1024:.0f} MiB, after load {mem['rss_kib'] / 1024:.0f} MiB, {mem['errors']} errors)")
    if proxy:
        t, ra = proxy["targets"], proxy["ratios"]
        for name in ("direct", "fleet", "nginx", "fleet-tls", "nginx-tls"):
            if name in t:
                h, mo = t[name]["high"], t[name]["moderate"]
                lines.append(f"{'4 proxy ' + name:<34} {'':>4} {h['rps']:>8.0f}/s   p50 {mo['p50_ms']:.3f} ms  p99 {mo['p99_ms']:.3f} ms (moderate load)")
        fn = ra.get("fleet/nginx throughput")
        added = ra.get("fleet p99 added at moderate load (ms)")
        targets.append(Target("proxy: fleet/nginx throughput (keep-alive)", f"{fn:.2f}x" if fn else "-", ">= 0.50x", None if fn is None else fn >= 0.5))
        targets.append(Target("proxy: p99 added over direct, moderate load", f"{added:.2f} ms" if added is not None else "-", "< 1 ms",
                              None if added is None else added < 1.0))
    if watch:
        lines.append(f"{'5 watch: save -> apply start':<34} {'':>4} {watch['apply_start_ms']:>7} ms")
        lines.append(f"{'5 watch: save -> agent running':<34} {'':>4} {watch['agent_running_ms']:>7} ms"
                     f"   (docker create+start {watch['docker_create_start_ms']} ms)")
        targets.append(Target("watch: save -> apply start", f"{watch['apply_start_ms']} ms", "< 150 ms", watch["apply_start_ms"] < 150))
        targets.append(Target("watch: done minus docker create+start", f"{watch['overhead_over_create_ms']} ms", "< 300 ms",
                              watch["overhead_over_create_ms"] < 300))
    if join:
        lines.append(f"{'7 join a shared host, no port':<34} {'':>4} {join['join_ms']:>7} ms   (leave {join['leave_ms']} ms)")
        lines.append(f"{'7 join a shared host, with a port':<34} {'':>4} {join['join_port_ms']:>7} ms   (leave {join['leave_port_ms']} ms)")
        targets.append(Target("join with a port: neighbour restarts", str(join["neighbour_restarts"]), "0",
                              join["neighbour_restarts"] == 0))
    if remote:
        rr = remote["remote_ms"] / remote["local_ms"] if remote["local_ms"] else None
        lines.append(f"{'8 no-op apply, remote engine':<34} {remote['agents']:>4} {remote['remote_ms'] / 1000:>8.2f} s"
                     f"   local engine {remote['local_ms'] / 1000:.2f} s" + (f", remote/local {rr:.2f}" if rr else ""))
        lines.append(f"{'8 ... per remote engine':<34} {'':>4} {remote['ssh']:>6} ssh   {remote['calls']} API calls"
                     f" (at N/4: {remote['ssh_small']} ssh, {remote['calls_small']} calls)")
        targets.append(Target("remote no-op: ssh processes per engine", str(max(remote["ssh"], remote["ssh_max"])), "1",
                              max(remote["ssh"], remote["ssh_max"], remote["ssh_small"]) == 1))
        targets.append(Target("remote no-op: API calls, N/4 -> N agents", f"{remote['calls_small']} -> {remote['calls']}",
                              "constant", remote["calls"] == remote["calls_small"]))
    return medians, lines, targets


def machine() -> dict:
    def cmd(args: list[str]) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpus": os.cpu_count(), "cpu": cpu, "mem_mib": mem, "platform": platform.platform(),
        "python": platform.python_version(), "docker": cmd(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_compose": cmd(["docker-compose", "version", "--short"]),
    }


# -- main -----------------------------------------------------------------------------------


def _sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="N = 3 and 6, one repetition, short proxy and watch runs")
    ap.add_argument("--ns", default=None, help="comma-separated N (default 10,100)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of each cold apply (default 3)")
    ap.add_argument("--noop-samples", type=int, default=2, help="no-op samples per repetition")
    ap.add_argument("--parallel", type=int, default=8, help="concurrency for fleet and the floor (compose: see compose_env)")
    ap.add_argument("--skip", default="", help="comma-separated: apply,proxy,watch,memory,join,remote")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/<timestamp>.json)")
    args = ap.parse_args()
    ns = [int(x) for x in (args.ns or ("3,6" if args.quick else "10,100")).split(",")]
    reps = args.reps or (1 if args.quick else 3)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    signal.signal(signal.SIGTERM, _sigterm)

    client = docker_client()
    try:
        client.ping()
    except Exception as exc:
        print(f"no Docker engine answers ({exc}); run `make engine`", file=sys.stderr)
        return 1
    compose = shutil.which("docker-compose")
    if compose is None:
        print("(docker-compose is not installed: compose columns are skipped; `make bench` installs it)", flush=True)
    ensure_tiny_image(client)
    run_id = uuid.uuid4().hex[:6]
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    ws = Workspace(run_id, tmp, args.parallel, compose)
    load_before = os.getloadavg()
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    print(f"fleet bench {run_id}: N={ns}, {reps} repetitions, parallel {args.parallel}, load average {load_before[0]:.2f}", flush=True)
    rec: dict = {}
    proxy = watch = mem = join = remote = None
    interrupted = False
    try:
        if "apply" not in skip:
            rec = reconcile_scenarios(ws, client, ns, reps, args.noop_samples)
        if "memory" not in skip:
            print(f"proxy memory with {max(ns)} routes ...", flush=True)
            mem = proxy_memory(ws, max(ns), 1.0 if args.quick else 5.0)
        if "proxy" not in skip:
            proxy = proxy_scenario(ws, args.quick)
        if "watch" not in skip:
            watch = watch_scenario(ws, args.quick)
        if "join" not in skip:
            join = join_scenario(ws, args.quick)
        if "remote" not in skip:
            remote = remote_scenario(ws, args.quick)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        stop_children()
        ws.cleanup(client)
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        return 130

    load_after = os.getloadavg()
    medians, lines, targets = summarise(rec, proxy, watch, mem, join, remote)
    print()
    print(f"Medians of {reps} repetitions (fleet and floor --parallel {args.parallel}, docker-compose unlimited; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after):")
    for line in lines:
        print(line)
    print()
    print("Targets (measurements, never failures):")
    for t in targets:
        print(t.row())
    result = {
        "format_version": 1,
        "when": started,
        "quick": args.quick,
        "params": {"ns": ns, "reps": reps, "noop_samples": args.noop_samples, "parallel": args.parallel,
                   "compose_parallel": "max(64, 2N)", "image": TINY},
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": load_after},
        "apply": {"samples": rec, "medians": medians},
        "proxy_memory": mem,
        "proxy": proxy,
        "watch": watch,
        "join": join,
        "remote": remote,
        "targets": [t.__dict__ for t in targets],
        "table": lines,
    }
    out = Path(args.out) if args.out else BENCH / "results" / f"{started}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
