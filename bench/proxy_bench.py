"""Routing proxy benchmark: fleet proxy vs direct vs nginx on the same backend.

Not a test: it measures. One backend (an nginx worker answering a small body on
127.0.0.1) is reached three ways with `wrk`, in interleaved rounds:

- direct: straight to the backend's port (what a published container port is);
- fleet: through the fleet proxy daemon, by hostname (`web.bench.localhost`);
- nginx: through nginx configured as a keep-alive reverse proxy for the same route.

Each is measured at high load (wrk, 64 keep-alive connections: throughput, and
the CPU time the proxy process spends per request) and at moderate load (a paced
client, 1000 requests/s over 4 keep-alive connections, one request at a time:
latency p50/p99), and over TLS (fleet vs nginx, both with a leaf from the fleet
CA). Medians over the rounds are printed with the ratios fleet/nginx and
fleet/direct, and written to bench/results/proxy.json.

Installs nginx and wrk with apt-get when missing (as root). Usage:
    .venv/bin/python bench/proxy_bench.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "web.bench.localhost"
BODY = "hello from the backend: " + "x" * 76 + "\n"  # about 100 bytes


def need_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)}: install them (apt-get install nginx wrk) or run as root")
    pkgs = ["nginx" if t == "nginx" else t for t in missing]
    print(f"installing {' '.join(pkgs)} with apt-get ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env, check=True, capture_output=True)
    # Debian's package may start a system nginx on port 80: not ours to keep
    subprocess.run(["sh", "-c", "command -v service >/dev/null && service nginx stop"], capture_output=True)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_nginx(workdir: Path, http_block: str) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / d).mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""{user}worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
{http_block}
}}
"""
    )
    return subprocess.Popen([nginx_bin(), "-c", str(conf), "-p", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time consumed so far by `pids`."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tck
    return total


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def wrk(url: str, connections: int, duration: float, cpu_pids: list[int] | None = None) -> dict:
    before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-H", f"Host: {HOST}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = (cpu_seconds(cpu_pids) - before) / max(requests, 1) * 1e6 if cpu_pids else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "cpu_us_per_req": cpu_us,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def paced(url: str, rate: float, seconds: float, conns: int = 4) -> dict:
    """Latency at a moderate, fixed request rate: one thread, `conns` keep-alive
    connections used in turn, each request sent once the previous one has fully
    arrived and its time slot has come. The client's own cost is the same for
    every target, so differences between targets are the proxies' doing."""
    import ssl as _ssl

    u = re.match(r"(https?)://([^:/]+):(\d+)/", url)
    assert u is not None
    scheme, host, port = u.group(1), u.group(2), int(u.group(3))
    ctx = None
    if scheme == "https":
        ctx = _ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, port), 5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname=HOST)
        socks.append(s)
    req = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    lat: list[float] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    slot = start
    i = 0
    try:
        while slot - start < seconds:
            now = time.perf_counter()
            if slot > now:
                time.sleep(slot - now)
            s = socks[i % conns]
            i += 1
            t0 = time.perf_counter()
            s.sendall(req)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            while len(body) < length:
                body += s.recv(65536)
            lat.append(time.perf_counter() - t0)
            slot = max(slot + interval, t0)  # never burst to catch up
    finally:
        for s in socks:
            s.close()
    lat.sort()
    n = len(lat)
    return {
        "rps": n / (time.perf_counter() - start),
        "p50_ms": lat[n // 2] * 1000,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1000,
        "non_2xx": 0,
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    ap.add_argument("--connections", type=int, default=64, help="connections for the throughput runs")
    ap.add_argument("--rate", type=float, default=1000, help="requests/s of the moderate-load latency runs")
    ap.add_argument("--no-tls", action="store_true", help="skip the HTTPS runs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "proxy.json"))
    args = ap.parse_args()

    need_tools()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-proxy-bench-"))
    os.chmod(tmp, 0o755)
    os.environ["FLEET_HOME"] = str(tmp / "home")

    from reconciler.routing import daemon
    from reconciler.net.ca import routing_ca
    from reconciler.routing.table import Route, set_fleet_routes

    backend_port, fleet_port, nginx_port, nginx_tls_port = (free_port() for _ in range(4))
    procs: list[subprocess.Popen] = []
    try:
        procs.append(
            start_nginx(
                tmp / "backend",
                f"""  server {{
    listen 127.0.0.1:{backend_port};
    location / {{ default_type text/plain; return 200 "{BODY.strip()}\\n"; }}
  }}""",
            )
        )
        ca = routing_ca().ensure()
        cert_pem, key_pem = ca.mint_leaf(HOST)
        (tmp / "leaf.crt").write_bytes(cert_pem + ca.cert_pem())
        (tmp / "leaf.key").write_bytes(key_pem)
        proxy_conf = f"""  upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{nginx_port};
    listen 127.0.0.1:{nginx_tls_port} ssl;
    ssl_certificate {tmp}/leaf.crt;
    ssl_certificate_key {tmp}/leaf.key;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
    }}
  }}"""
        procs.append(start_nginx(tmp / "proxy", proxy_conf))
        set_fleet_routes(
            "bench",
            [fleet_port],
            [Route(agent="bench", service="web", container_port=3000, target=f"http://127.0.0.1:{backend_port}")],
        )
        state = daemon.start()
        fleet_pid = state["pid"]
        for p in (backend_port, nginx_port, nginx_tls_port, fleet_port):
            wait_port(p)
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"nginx exited: {p.stderr.read().decode() if p.stderr else ''}")

        # CPU time the proxy itself spends per request: unlike req/s, hardly moved by
        # other load on the machine (the fleet daemon; nginx's proxy worker)
        cpu_of = {"fleet": [fleet_pid], "fleet-tls": [fleet_pid],
                  "nginx": children(procs[1].pid), "nginx-tls": children(procs[1].pid)}
        targets = {
            "direct": f"http://127.0.0.1:{backend_port}/",
            "fleet": f"http://127.0.0.1:{fleet_port}/",
            "nginx": f"http://127.0.0.1:{nginx_port}/",
        }
        if not args.no_tls:
            targets["fleet-tls"] = f"https://127.0.0.1:{fleet_port}/"
            targets["nginx-tls"] = f"https://127.0.0.1:{nginx_tls_port}/"
        # wrk sends no SNI for an IP URL; the fleet proxy then serves its default
        # (localhost) leaf: wrk does not verify, so the handshake cost is the same.

        for url in targets.values():  # warm up (connections, leaf minting, caches)
            wrk(url, args.connections, 1)
        runs: dict[str, dict[str, list[dict]]] = {k: {"high": [], "moderate": []} for k in targets}
        names = list(targets)
        for rnd in range(args.rounds):
            # a rotating order: drift in the machine's load hits every target alike
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                url = targets[name]
                runs[name]["high"].append(wrk(url, args.connections, args.duration, cpu_of.get(name)))
                runs[name]["moderate"].append(paced(url, args.rate, args.duration))
            print(f"round {rnd + 1}/{args.rounds} done", flush=True)
        fleet_rss = rss_kib(fleet_pid)

        def med(name: str, load: str, key: str) -> float:
            return statistics.median(r[key] for r in runs[name][load])

        summary: dict = {"targets": {}}
        print()
        print(f"{'target':<10} {'req/s (c=' + str(args.connections) + ')':>16} {'p50 ms':>8} {'p99 ms':>8}"
              f"   {'at ' + format(args.rate, 'g') + ' req/s:':>14} {'p50 ms':>8} {'p99 ms':>8}")
        for name in targets:
            row = {load: {k: med(name, load, k) for k in ("rps", "p50_ms", "p99_ms")} for load in ("high", "moderate")}
            if name in cpu_of:
                row["high"]["cpu_us_per_req"] = med(name, "high", "cpu_us_per_req")
            row["errors"] = sum(r["non_2xx"] for load in ("high", "moderate") for r in runs[name][load])
            summary["targets"][name] = row
            h, m = row["high"], row["moderate"]
            print(f"{name:<10} {h['rps']:>16.0f} {h['p50_ms']:>8.3f} {h['p99_ms']:>8.3f}"
                  f"   {'':>14} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f}")
        t = summary["targets"]
        ratios = {
            "fleet/nginx throughput": t["fleet"]["high"]["rps"] / t["nginx"]["high"]["rps"],
            "fleet/direct throughput": t["fleet"]["high"]["rps"] / t["direct"]["high"]["rps"],
            "fleet p50 added at moderate load (ms)": t["fleet"]["moderate"]["p50_ms"] - t["direct"]["moderate"]["p50_ms"],
            "fleet p99 added at moderate load (ms)": t["fleet"]["moderate"]["p99_ms"] - t["direct"]["moderate"]["p99_ms"],
            "nginx p99 added at moderate load (ms)": t["nginx"]["moderate"]["p99_ms"] - t["direct"]["moderate"]["p99_ms"],
        }
        ratios["nginx/fleet proxy CPU per request"] = t["nginx"]["high"]["cpu_us_per_req"] / t["fleet"]["high"]["cpu_us_per_req"]
        print()
        for name in cpu_of:
            if name in t:
                print(f"{name + ' proxy CPU per request':<40} {t[name]['high']['cpu_us_per_req']:8.1f} us")
        if "fleet-tls" in t:
            ratios["fleet-tls/nginx-tls throughput"] = t["fleet-tls"]["high"]["rps"] / t["nginx-tls"]["high"]["rps"]
        print()
        for k, v in ratios.items():
            print(f"{k:<40} {v:8.3f}")
        errs = {k: v["errors"] for k, v in t.items() if v["errors"]}
        if errs:
            print(f"non-2xx responses: {errs}")
        print(f"fleet proxy RSS after the run: {fleet_rss / 1024:.1f} MiB")
        summary.update(
            {
                "ratios": ratios,
                "fleet_proxy_rss_kib": fleet_rss,
                "params": vars(args),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "runs": runs,
            }
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"written to {out}")
    finally:
        try:
            daemon.stop()
        except Exception:
            pass
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
