"""Hostname routing kept in sync by `fleet apply`, on the real engine, through
the real proxy daemon, with curl as the client (HTTP and HTTPS)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import cleanup_fleet, free_port, run_fleet
from tests.e2e.test_docker_apply import containers, wait_for, write

pytestmark = pytest.mark.docker

# each agent serves its own name on :3000 (and :4000 for the api service)
SERVE = "sh -c 'mkdir -p /srv && echo $FLEET_AGENT > /srv/index.html && cd /srv && exec python3 -m http.server 3000'"
SERVE_YAML = json.dumps(SERVE)  # a YAML double-quoted scalar


def curl(url: str, fleet_home, *extra: str) -> tuple[int, str]:
    """(HTTP status, body) using curl, trusting fleet's CA for https."""
    args = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", *extra]
    if url.startswith("https"):
        args += ["--cacert", str(fleet_home / "ca" / "ca.crt")]
    proc = subprocess.run(args + [url], capture_output=True, text=True, timeout=15)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body.strip()


def fleet_yaml(name: str, image: str, port: int, agents: dict[str, str]) -> str:
    lines = "\n".join(f"          {a}: {spec}" for a, spec in agents.items())
    return f"""
        fleet: {name}
        proxy: {{port: {port}}}
        defaults: {{image: {image}, command: {SERVE_YAML}}}
        agents:
{lines}
        """


def test_two_agents_on_the_same_port_each_have_their_url(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    port = free_port()
    path = write(tmp_path, fleet_yaml(fleet_name, base_image, port, {"dark-mode": "{ports: {web: 3000}}", "checkout": "{ports: {web: 3000}}"}))
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert "route" in r.out
    for agent in ("dark-mode", "checkout"):
        for scheme in ("http", "https"):
            url = f"{scheme}://web.{agent}.localhost:{port}/"
            assert wait_for(lambda: curl(url, fleet_home) == (200, agent), what=f"{url}: last {curl(url, fleet_home)}")
        # one port: the agent also answers at <agent>.localhost, case-insensitively
        assert curl(f"https://{agent.upper()}.localhost:{port}/", fleet_home) == (200, agent)
    # inside the agent, its own public URL
    c = containers(docker_client, fleet_name)["agent:dark-mode"]
    assert f"FLEET_URL_WEB=https://web.dark-mode.localhost:{port}" in c.attrs["Config"]["Env"]
    # the index lists both; unknown names get 404 with the list; foreign hosts are refused
    code, body = curl(f"http://localhost:{port}/", fleet_home, "-H", "Accept: application/json")
    assert code == 200
    names = json.dumps(json.loads(body))
    assert "web.dark-mode.localhost" in names and "web.checkout.localhost" in names
    code, body = curl(f"http://web.nobody.localhost:{port}/", fleet_home)
    assert code == 404 and "web.checkout.localhost" in body
    code, _ = curl(f"http://127.0.0.1:{port}/", fleet_home, "-H", "Host: example.com")
    assert code in (400, 421)
    # apply again: nothing to do, routes included
    assert "up to date" in run_fleet("apply", str(path)).out
    # status shows the URL
    r = run_fleet("status", str(path), "-o", "json")
    assert r.code == 0


def test_routes_follow_apply_without_restarting_the_proxy(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    port = free_port()
    path = write(tmp_path, fleet_yaml(fleet_name, base_image, port, {"a": "{ports: {web: 3000}}", "b": "{ports: {web: 3000}}"}))
    assert run_fleet("apply", str(path)).code == 0
    wait_for(lambda: curl(f"http://web.a.localhost:{port}/", fleet_home) == (200, "a"), what="a")
    pid = (fleet_home / "proxy.pid").read_text().strip()
    old_target = _target(fleet_home, fleet_name, "a")

    # replaced agent: new container, new published port, same URL
    path.write_text(path.read_text().replace("a: {ports: {web: 3000}}", "a: {ports: {web: 3000}, env: {V: '2'}}"))
    assert run_fleet("apply", str(path)).code == 0
    assert _target(fleet_home, fleet_name, "a") != old_target
    wait_for(lambda: curl(f"http://web.a.localhost:{port}/", fleet_home) == (200, "a"), what="a after replace")
    assert (fleet_home / "proxy.pid").read_text().strip() == pid

    # destroyed agent: 404 naming what is known
    path.write_text(path.read_text().replace("  b: {ports: {web: 3000}}\n", ""))
    assert "\n  b:" not in path.read_text()
    assert run_fleet("apply", str(path)).code == 0
    # (the proxy picks the new table up within its reload interval)
    wait_for(lambda: curl(f"http://web.b.localhost:{port}/", fleet_home)[0] == 404, what="b's route gone")
    code, body = curl(f"http://web.b.localhost:{port}/", fleet_home)
    assert code == 404 and "web.a.localhost" in body
    assert curl(f"http://web.a.localhost:{port}/", fleet_home) == (200, "a")

    # the proxy restarted: routes are back (they live in the route table)
    assert run_fleet("proxy", "stop").code == 0
    assert curl(f"http://web.a.localhost:{port}/", fleet_home)[0] == 0  # nothing listens
    assert run_fleet("proxy", "start").code == 0
    wait_for(lambda: curl(f"https://web.a.localhost:{port}/", fleet_home) == (200, "a"), what="a after proxy restart")

    # the proxy gone (a reboot): apply sees it and starts it again, not "up to date"
    assert run_fleet("proxy", "stop").code == 0
    r = run_fleet("apply", str(path))
    assert r.code == 0 and "routing proxy not running" in r.out, r.text
    wait_for(lambda: curl(f"https://web.a.localhost:{port}/", fleet_home) == (200, "a"), what="a after apply restarted the proxy")
    assert "up to date" in run_fleet("apply", str(path)).out

    # destroy removes the fleet's routes
    assert run_fleet("destroy", "--yes", str(path)).code == 0
    # (no fleet routes on that port any more: the proxy stops listening there)
    wait_for(lambda: curl(f"http://web.a.localhost:{port}/", fleet_home)[0] in (0, 404), what="routes removed by destroy")
    assert fleet_name not in json.loads((fleet_home / "routes.json").read_text())["fleets"]


def _target(fleet_home, fleet: str, agent: str) -> str:
    table = json.loads((fleet_home / "routes.json").read_text())
    return next(r["target"] for r in table["fleets"][fleet]["routes"] if r["agent"] == agent)


def test_a_shared_host_agent_is_routed_through_its_holder(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    port = free_port()
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {port}}}
        hosts:
          pod: {{image: {base_image}}}
        agents:
          impl: {{host: pod, ports: {{web: 3000}}, command: {SERVE_YAML}}}
          tester: {{host: pod, command: [sleep, infinity]}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    wait_for(lambda: curl(f"https://web.impl.localhost:{port}/", fleet_home) == (200, "impl"), what="impl via holder")


def test_two_fleets_share_one_proxy_and_collisions_are_refused(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    port = free_port()
    other = fleet_name + "b"
    third = fleet_name + "c"
    try:
        one = tmp_path / "one"
        two = tmp_path / "two"
        three = tmp_path / "three"
        for d in (one, two, three):
            d.mkdir()
        p1 = write(one, fleet_yaml(fleet_name, base_image, port, {"alpha": "{ports: {web: 3000}}"}))
        p2 = write(two, fleet_yaml(other, base_image, port, {"beta": "{ports: {web: 3000}}"}))
        assert run_fleet("apply", str(p1)).code == 0
        assert run_fleet("apply", str(p2)).code == 0
        wait_for(lambda: curl(f"http://web.alpha.localhost:{port}/", fleet_home) == (200, "alpha"), what="alpha")
        wait_for(lambda: curl(f"http://web.beta.localhost:{port}/", fleet_home) == (200, "beta"), what="beta")
        # a third fleet claiming web.alpha on the same proxy port is refused, naming the owner, changing nothing
        p3 = write(three, fleet_yaml(third, base_image, port, {"alpha": "{ports: {web: 3000}}"}))
        r = run_fleet("apply", str(p3))
        assert r.code == 1
        assert f"already routed by fleet {fleet_name}" in r.err and "web.alpha.localhost" in r.err, r.text
        assert containers(docker_client, third) == {}
        assert curl(f"http://web.alpha.localhost:{port}/", fleet_home) == (200, "alpha")
    finally:
        cleanup_fleet(docker_client, other)
        cleanup_fleet(docker_client, third)
