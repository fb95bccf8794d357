"""A/B: the routing proxy of two source trees (two checkouts of fleet), side by
side on one nginx backend, wrk alternating between them every round, so the
machine's load hits both alike. Prints req/s and proxy CPU per request per
round and their medians: the fair way to compare a change to the proxy on a
busy machine (`make bench` runs each tool in turn).

    .venv/bin/python bench/proxy_ab.py BEFORE_TREE AFTER_TREE [ROUNDS] [SECONDS]

Needs nginx and wrk (bench/install-tools.sh)."""
import os, re, subprocess, sys, time, socket, tempfile, json, statistics
from pathlib import Path
PY = sys.executable
trees = {"before": sys.argv[1], "after": sys.argv[2]}
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 8
dur = float(sys.argv[4]) if len(sys.argv) > 4 else 3

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait_port(p):
    for _ in range(200):
        try: socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError: time.sleep(0.05)
    raise SystemExit(f"port {p}")

tmp = Path(tempfile.mkdtemp(prefix="relay-ab-"))
backend = free_port()
(tmp / "b").mkdir()
for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"): (tmp / "b" / d).mkdir()
user = "user root;\n" if os.geteuid() == 0 else ""
(tmp / "b/nginx.conf").write_text(f"""{user}worker_processes 1; daemon off; pid {tmp}/b/nginx.pid; error_log {tmp}/b/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}/b/body; proxy_temp_path {tmp}/b/proxy; fastcgi_temp_path {tmp}/b/fastcgi;
uwsgi_temp_path {tmp}/b/uwsgi; scgi_temp_path {tmp}/b/scgi; keepalive_requests 10000000;
server {{ listen 127.0.0.1:{backend}; location / {{ default_type text/plain; return 200 "{'x'*100}\\n"; }} }} }}""")
procs = [subprocess.Popen(["nginx", "-c", str(tmp / "b/nginx.conf"), "-p", str(tmp / "b")])]
ports, pids = {}, {}
try:
    for name, tree in trees.items():
        home = tmp / name
        home.mkdir()
        port = free_port()
        env = dict(os.environ, FLEET_HOME=str(home), PYTHONPATH=tree)
        subprocess.run([PY, "-c", f"""
from reconciler.routing.table import Route, set_fleet_routes
set_fleet_routes("bench", [{port}], [Route(agent="bench", service="web", container_port=3000, target="http://127.0.0.1:{backend}")])
"""], env=env, check=True, cwd="/")
        p = subprocess.Popen([PY, "-m", "reconciler.routing.daemon"], env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=open(home / "err", "w"))
        procs.append(p)
        ports[name], pids[name] = port, p.pid
    wait_port(backend)
    for p in ports.values(): wait_port(p)
    tck = os.sysconf("SC_CLK_TCK")
    def cpu(pid):
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / tck
    res = {n: {"rps": [], "cpu": []} for n in trees}
    for r in range(rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(list(trees)))
        for n in order:
            c0 = cpu(pids[n])
            out = subprocess.run(["wrk", "-t1", "-c64", f"-d{dur:g}s", "-H", "Host: web.bench.localhost", f"http://127.0.0.1:{ports[n]}/"], capture_output=True, text=True).stdout
            c1 = cpu(pids[n])
            rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
            reqs = int(re.search(r"(\d+) requests in", out).group(1))
            assert "Non-2xx" not in out, out
            res[n]["rps"].append(rps); res[n]["cpu"].append((c1 - c0) / reqs * 1e6)
        print(f"round {r+1}: " + "  ".join(f"{n} {res[n]['rps'][-1]:.0f} req/s {res[n]['cpu'][-1]:.1f} us" for n in trees), flush=True)
    for n in trees:
        print(f"{n}: median {statistics.median(res[n]['rps']):.0f} req/s, median CPU {statistics.median(res[n]['cpu']):.1f} us/req, best {max(res[n]['rps']):.0f} req/s")
    json.dump(res, open(Path(tempfile.gettempdir()) / f"proxy-ab-{int(time.time())}.json", "w"))
finally:
    for p in procs: p.terminate()
    for p in procs: p.wait()
