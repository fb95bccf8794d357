"""Agents join and leave a running shared host, with or without ports, without
restarting their neighbours; fleet URLs work inside agents (names, TLS
verified); `apply` returns only once the proxy serves the new table; a proxy
port held by anything else is refused before anything is created. All through
the real CLI, on the real engine, through the real proxy."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from tests.conftest import free_port, run_fleet, wait_for
from tests.e2e.test_docker_apply import containers, write

pytestmark = pytest.mark.docker

# serves its own name on $PORT and echoes what is typed into its terminal
SERVE = ("sh -c 'mkdir -p /srv/$FLEET_AGENT && echo $FLEET_AGENT > /srv/$FLEET_AGENT/index.html && "
         "cd /srv/$FLEET_AGENT && (python3 -m http.server $PORT >/dev/null 2>&1 &) ; exec cat'")


def agent_line(name: str, port: int | None, host: str | None = "box", message: str | None = None) -> str:
    parts = [f"command: {json.dumps(SERVE)}"]
    if host:
        parts.append(f"host: {host}")
    if port:
        parts += [f"ports: {{{'web' if name != 'b' else 'api'}: {port}}}", f"env: {{PORT: '{port}'}}"]
    if message:
        parts.append(f"message: {json.dumps(message)}")
    return f"  {name}: {{{', '.join(parts)}}}"


def fleet_file(tmp_path, fleet: str, image: str, proxy: int, agents: list[str]):
    text = f"fleet: {fleet}\nproxy: {{port: {proxy}}}\ndefaults: {{image: {image}}}\nhosts:\n  box: {{}}\nagents:\n"
    return write(tmp_path, text + "\n".join(agents) + "\n")


def started(docker_client, name: str) -> tuple[str, str]:
    c = docker_client.containers.get(name)
    return c.id, c.attrs["State"]["StartedAt"]


def status_of(url: str, fleet_home, *extra: str) -> int:
    out = subprocess.run(
        ["curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(fleet_home / "ca" / "ca.crt"), *extra, url],
        capture_output=True, text=True, timeout=15,
    ).stdout
    return int(out or 0)


def inside(container, cmd: str) -> tuple[int, str]:
    """Run `cmd` in the agent as its own shell would: its environment, no flags added."""
    code, out = container.exec_run(["/bin/sh", "-c", cmd])
    return code, out.decode(errors="replace")


def test_join_and_leave_with_ports_never_restart_neighbours(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    proxy = free_port()
    a = agent_line("a", 3000, message="first-message-of-a")
    p = agent_line("p", 3000, host=None)
    path = fleet_file(tmp_path, fleet_name, base_image, proxy, [a, p])
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    cs = containers(docker_client, fleet_name)
    holder, agent_a = cs["host:box"], cs["agent:a"]
    assert not holder.attrs["NetworkSettings"]["Ports"], "the holder publishes nothing"
    wait_for(lambda: status_of(f"https://web.a.localhost:{proxy}/", fleet_home) == 200, what="a's URL")
    wait_for(lambda: "first-message-of-a" in agent_a.logs().decode(), what="a's first message")
    typed = agent_a.logs().decode().count("first-message-of-a")
    # status shows where the proxy reaches a: the holder's bridge address
    rows = {r["agent"]: r for r in json.loads(run_fleet("status", str(path), "-o", "json").out)["agents"]}
    ip = next(n["IPAddress"] for n in holder.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"])
    assert rows["a"]["ports"][0]["address"] == f"{ip}:3000" and rows["a"]["ports"][0]["host_port"] is None
    before = {n: started(docker_client, c.name) for n, c in cs.items()}

    # inside the agents: their own URL and each other's, https verified, no flags
    code, out = inside(agent_a, 'curl -sS -m 5 "$FLEET_URL_WEB"')
    assert (code, out.strip()) == (0, "a"), out
    wait_for(lambda: inside(cs["agent:p"], f"curl -sS -m 5 https://web.a.localhost:{proxy}/")[1].strip() == "a", what="p -> a")
    code, out = inside(agent_a, f"curl -sS -m 5 https://web.p.localhost:{proxy}/")
    assert (code, out.strip()) == (0, "p"), out
    code, out = inside(agent_a, "python3 -c \"import os,urllib.request;print(urllib.request.urlopen(os.environ['FLEET_URL_WEB']).read().decode())\"")
    assert (code, out.strip()) == (0, "a"), out
    assert inside(agent_a, "hostname -f >/dev/null && getent hosts localhost box fleet-proxy")[0] == 0

    # b joins with a port: nothing else moves, and its URL is served as apply returns
    b = agent_line("b", 3001)
    path = fleet_file(tmp_path, fleet_name, base_image, proxy, [a, p, b])
    r = run_fleet("diff", str(path))
    assert "join" in r.out and "routes of b (added)" in r.out and "  host box" not in r.out, r.out
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    assert status_of(f"https://api.b.localhost:{proxy}/", fleet_home) != 404  # routed (502 at most while it starts)
    wait_for(lambda: status_of(f"https://api.b.localhost:{proxy}/", fleet_home) == 200, what="b's URL")
    after = {n: started(docker_client, c.name) for n, c in containers(docker_client, fleet_name).items() if n in before}
    assert after == before, "a neighbour was restarted or replaced"
    # a, started before b existed, reaches b by name without a restart
    code, out = inside(agent_a, f"curl -sS -m 5 https://api.b.localhost:{proxy}/")
    assert (code, out.strip()) == (0, "b"), out

    # c joins without a port: no route action at all
    c = agent_line("c", None)
    path = fleet_file(tmp_path, fleet_name, base_image, proxy, [a, p, b, c])
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and "route" not in r.out, r.text
    # b and c leave: b's URL is 404 the moment apply returns, the others untouched
    path = fleet_file(tmp_path, fleet_name, base_image, proxy, [a, p])
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and "routes of b (removed)" in r.out, r.text
    assert status_of(f"https://api.b.localhost:{proxy}/", fleet_home) == 404
    after = {n: started(docker_client, c.name) for n, c in containers(docker_client, fleet_name).items()}
    assert after == before
    assert agent_a.logs().decode().count("first-message-of-a") == typed, "a's first message was typed again"
    assert run_fleet("apply", "--yes", str(path)).out.strip().endswith("up to date (3 unchanged)")


def test_apply_returns_once_routes_are_served(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    """Removed: 404 the moment apply returns (not the old target's 502); added: routed."""
    proxy = free_port()
    keep = agent_line("keep", 3000, host=None)
    for i in range(2):
        extra = agent_line(f"x{i}", 3000, host=None)
        path = fleet_file(tmp_path, fleet_name, base_image, proxy, [keep, extra])
        assert run_fleet("apply", "--yes", str(path)).code == 0
        assert status_of(f"https://web.x{i}.localhost:{proxy}/", fleet_home) != 404
        wait_for(lambda: status_of(f"https://web.x{i}.localhost:{proxy}/", fleet_home) == 200, what=f"x{i}")
        path = fleet_file(tmp_path, fleet_name, base_image, proxy, [keep])
        assert run_fleet("apply", "--yes", str(path)).code == 0
        assert status_of(f"https://web.x{i}.localhost:{proxy}/", fleet_home) == 404


def test_proxy_port_held_by_another_program_is_refused_before_anything(tmp_path, docker_client, base_image, fleet_name):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        path = fleet_file(tmp_path, fleet_name, base_image, port, [agent_line("p", 3000, host=None)])
        for cmd in ("diff", "apply"):
            r = run_fleet(cmd, "--yes", str(path)) if cmd == "apply" else run_fleet(cmd, str(path))
            assert r.code == 1, r.text
            assert f"port {port} on 127.0.0.1 is already in use by python" in r.text, r.text
            assert "Traceback" not in r.text and "URLs" not in r.out
        assert containers(docker_client, fleet_name) == {}


def test_a_holder_that_publishes_ports_is_replaced_once(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    """A holder made by an older fleet published its agents' ports (and its spec
    said so): the next apply replaces it once, saying why; then it is settled."""
    from reconciler.core import labels as L
    from reconciler.load.loader import load
    from reconciler.core.model import canonical_hash

    path = fleet_file(tmp_path, fleet_name, base_image, free_port(), [agent_line("a", 3000)])
    old_spec = {**load(path).hosts["box"].spec(), "ports": [3000]}
    old = docker_client.containers.run(
        base_image, ["sleep", "infinity"], name=L.host_container(fleet_name, "box"), detach=True,
        ports={"3000/tcp": ("127.0.0.1", None)},
        labels={L.PROJECT: fleet_name, L.KIND: "host", L.HOST: "box", L.NAMING: L.NAMING_VERSION, L.SPEC_HASH: canonical_hash(old_spec),
                L.SPEC: json.dumps(old_spec, sort_keys=True, separators=(",", ":"))},
    )
    r = run_fleet("diff", str(path))
    assert "replace" in r.out and "holder publishes its agents' ports (older fleet)" in r.out, r.out
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    holder = containers(docker_client, fleet_name)["host:box"]
    assert holder.id != old.id and not holder.attrs["NetworkSettings"]["Ports"]
    wait_for(lambda: status_of(f"https://web.a.localhost:{load(path).proxy.port}/", fleet_home) == 200, what="a's URL")
    assert run_fleet("apply", "--yes", str(path)).out.strip().endswith("up to date (2 unchanged)")
