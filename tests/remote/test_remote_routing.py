"""Routing to agents on a remote engine, on the real thing: a second dockerd behind
sshd (remote_engine), a fleet.yaml with a shared host and a private agent on it
(`engine: ssh://NAME`) applied with `fleet apply`, the real proxy daemon
keeping ONE ssh link to the engine and dialling the agents' bridge addresses
there through its SOCKS forward. Nothing is published or listens on the
remote's network for it; a killed link comes back by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from reconciler.core.routes import routes_for
from reconciler.net.ca import routing_ca
from reconciler.routing import daemon
from reconciler.routing.table import Listen, read_table, set_fleet_routes
from tests.conftest import free_port, wait_for
from tests.remote.helpers import alive
from tests.remote.world import RemoteFleet, link_state, tail_log, wait_link_up
from tests.routing.helpers import client_ssl, request

pytestmark = pytest.mark.docker

YAML = """\
fleet: {fleet}
proxy: {{port: PORT}}
defaults:
  image: {image}
hosts:
  box: {{engine: "{engine}"}}
agents:
  impl:
    host: box
    ports: {{web: 3000}}
    command: ["sh", "-c", "cd /tmp && exec python3 -m http.server 3000"]
  mate:
    host: box
    ports: {{api: 3001}}
    command: ["sh", "-c", "cd /tmp && exec python3 -m http.server 3001"]
  solo:
    engine: "{engine}"
    ports: {{web: 3000}}
    command: ["sh", "-c", "cd /tmp && exec python3 -m http.server 3000"]
"""


@pytest.fixture(scope="module")
def world(remote_engine, base_image, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("remote-routing")
    home = tmp / "home"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("FLEET_HOME", str(home))
    port = free_port()
    w = RemoteFleet(tmp, remote_engine, base_image, YAML.replace("PORT", str(port)), {"FLEET_HOME": str(home)})
    w.home, w.port = home, port
    try:
        r = w.fleet("apply", "--yes")
        assert r.code == 0, r.text
        w.link_after_apply = link_state(w.engine)  # apply returns once the link is up
        for agent in ("impl", "mate", "solo"):  # the servers answer in their containers
            port_in = next(iter(w.desired.agents[agent].ports.values()))
            wait_for(lambda a=agent, p=port_in: w.container(a).exec_run(
                ["python3", "-c", f"import urllib.request as u; u.urlopen('http://127.0.0.1:{p}/')"]).exit_code == 0,
                timeout=20, what=f"{agent}'s server")
        w.routes = read_table().fleets[w.name].routes
        yield w
    finally:
        w.cleanup()
        daemon.stop()
        mp.undo()


@pytest.fixture(autouse=True)
def _world_home(world, fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(world.home))


def test_routes_of_remote_agents_are_their_bridge_addresses_on_that_engine(world):
    by = {(r.agent, r.service): r for r in world.routes}
    assert set(by) == {("impl", "web"), ("mate", "api"), ("solo", "web")}
    obs = world.observed()
    holder = next(h for h in obs.hosts if h.name == "box")
    solo = next(a for a in obs.agents if a.name == "solo")
    assert holder.address and solo.address
    assert by[("impl", "web")].target == f"http://{holder.address}:3000"
    assert by[("mate", "api")].target == f"http://{holder.address}:3001"
    assert by[("solo", "web")].target == f"http://{solo.address}:3000"
    assert {r.engine for r in world.routes} == {world.engine}


def test_apply_returns_with_the_link_up_and_a_second_apply_is_up_to_date(world):
    assert world.link_after_apply.get("up") is True, world.link_after_apply
    r = world.fleet("apply", "--yes")
    assert r.code == 0 and "up to date" in r.out, r.text


@pytest.mark.parametrize("agent,service", [("impl", "web"), ("mate", "api"), ("solo", "web")])
def test_a_remote_agent_answers_through_the_local_proxy_http_and_https(world, agent, service):
    host = f"{service}.{agent}.localhost"
    status, _, body = request(host, world.port, "/")
    assert status == 200, body[:300]
    assert b"Directory listing" in body
    status, _, body = request(host, world.port, "/", tls=client_ssl(routing_ca()))
    assert status == 200, body[:300]
    assert b"Directory listing" in body


def test_one_ssh_link_per_engine_and_nothing_listens_on_the_remote_network(world):
    state = link_state(world.engine)
    assert state["up"] and state["pid"] and state["reverse"] is None  # no grants here: no reverse forward
    with open(f"/proc/{state['pid']}/cmdline", "rb") as fh:
        argv = fh.read().split(b"\0")
    assert argv[0] == b"ssh" and b"-D" in argv and b"-R" not in argv and argv[-2] == world.remote.name.encode()
    # several requests, one link: the pid does not change
    for _ in range(5):
        assert request("web.impl.localhost", world.port, "/")[0] == 200
    assert link_state(world.engine)["pid"] == state["pid"]
    # on the remote machine, only sshd (and loopback) listen: no published port
    r = subprocess.run(["nsenter", f"--net=/var/run/netns/{world.remote.netns}", "ss", "-Hltn"],
                       capture_output=True, text=True, check=True)
    local = [line.split()[3] for line in r.stdout.splitlines()]
    exposed = [a for a in local if not a.startswith(("127.", "[::1]", "::1")) and a != f"{world.remote.remote_ip}:22"]
    assert exposed == [], r.stdout
    ports = world.remote.docker().api.inspect_container(world.container("solo").id)["NetworkSettings"]["Ports"]
    assert all(b["HostIp"] in ("127.0.0.1", "::1") for bs in ports.values() if bs for b in bs), ports


def test_a_killed_link_comes_back_and_the_route_answers_again(world):
    first = wait_link_up(world.engine)["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first), timeout=10, what="ssh to die")
    # while it is down (it comes back after a backoff): a 502 that names the engine
    status, _, body = request("web.impl.localhost", world.port, "/")
    assert status == 502 and f"SSH link to engine {world.engine}".encode() in body, (status, body)
    wait_for(lambda: link_state(world.engine).get("up") and link_state(world.engine).get("pid") != first,
             timeout=30, interval=0.05, what=f"the link back ({link_state(world.engine)}; {tail_log()})")
    assert link_state(world.engine)["restarts"] >= 1
    status, _, body = request("web.impl.localhost", world.port, "/")
    assert status == 200, body[:300]


def test_a_route_to_an_engine_that_cannot_be_reached_is_a_502_naming_it(world):
    engine = "ssh://fleet-no-such-host.invalid"
    bad = world.routes[0].model_copy(update={"engine": engine, "agent": "ghost"})
    set_fleet_routes(world.name + "x", [Listen(port=world.port)], [bad])
    try:
        daemon.wait_loaded(daemon_revision())
        wait_for(lambda: link_state(engine).get("error"), timeout=20, what=f"the link to fail ({link_state(engine)})")
        status, _, body = request("web.ghost.localhost", world.port, "/")
        assert status == 502
        assert engine.encode() in body and b"down" in body, body
    finally:
        from reconciler.routing.table import remove_fleet

        remove_fleet(world.name + "x")
    # no route needs it any more: its link goes
    wait_for(lambda: not link_state(engine), timeout=10, what="the unneeded link to stop")
    assert link_state(world.engine)["up"]


def daemon_revision() -> int:
    from reconciler.routing.table import read_table

    return read_table().revision


def test_proxy_status_shows_the_link_and_checks_remote_targets_through_it(world):
    from tests.conftest import run_fleet

    r = run_fleet("proxy", "status", "-o", "json", env={"FLEET_HOME": str(world.home)})
    assert r.code == 0, r.text
    st = json.loads(r.out)
    assert st["links"][world.engine]["up"] is True
    mine = {(x["agent"], x["service"]): x for x in st["routes"] if x["fleet"] == world.name}
    assert {k: (v["engine"], v["healthy"]) for k, v in mine.items()} == {
        ("impl", "web"): (world.engine, True), ("mate", "api"): (world.engine, True), ("solo", "web"): (world.engine, True)}
    r = run_fleet("proxy", "status", env={"FLEET_HOME": str(world.home)})
    assert f"engine {world.engine}: link up (ssh pid" in r.out, r.out
    assert f"via {world.engine}" in r.out


def test_routes_for_a_remote_engine_are_pure_and_need_an_address():
    """routes_for (pure): an agent observed on an engine gets `engine` and its (or
    its holder's) bridge address; without an address there, no route (never a
    127.0.0.1 port of this machine)."""
    from reconciler.core.model import Desired, DesiredAgent, ImageRef, ObservedAgent, ObservedHost, Observed
    from pathlib import Path

    e = "ssh://box"
    img = ImageRef(ref="x")
    d = Desired(fleet="f", file=Path("/f.yaml"), agents={
        "a": DesiredAgent(name="a", image=img, ports={"web": 3000}, engine=e),
        "b": DesiredAgent(name="b", host="h", image=img, ports={"api": 8000}, engine=e),
        "c": DesiredAgent(name="c", image=img, ports={"web": 3000}, engine=e),
    })
    o = Observed(fleet="f", hosts=(ObservedHost(name="h", provider="docker", id="H", state="running", spec_hash="x",
                                                address="172.30.0.9", engine=e),),
                 agents=(ObservedAgent(name="a", host=None, provider="docker", id="A", state="running", spec_hash="x",
                                       address="172.30.0.5", ports={3000: 49000}, engine=e),
                         ObservedAgent(name="b", host="h", provider="docker", id="B", state="running", spec_hash="x",
                                       engine=e),
                         ObservedAgent(name="c", host=None, provider="docker", id="C", state="running", spec_hash="x",
                                       ports={3000: 49001}, engine=e)))
    got = {(r.agent, r.target, r.engine) for r in routes_for(d, o)}
    assert got == {("a", "http://172.30.0.5:3000", e), ("b", "http://172.30.0.9:8000", e)}


def test_a_remote_port_nobody_listens_on_is_a_502_at_once(world):
    """The SOCKS forward says yes before the far end answers; a refused connection
    there still ends as a 502 naming the agent, quickly (no hang)."""
    import time

    dead = world.routes[0].model_copy(update={"agent": "deaf", "target": world.routes[0].target.rsplit(":", 1)[0] + ":3999"})
    set_fleet_routes(world.name + "d", [Listen(port=world.port)], [dead])
    try:
        daemon.wait_loaded(read_table().revision)
        t = time.monotonic()
        status, _, body = request(f"{dead.service}.deaf.localhost", world.port, "/")
        assert status == 502 and b"agent deaf" in body, body
        assert time.monotonic() - t < 5
    finally:
        from reconciler.routing.table import remove_fleet

        remove_fleet(world.name + "d")


def test_zz_a_killed_daemon_leaves_no_ssh_and_the_next_one_links_again(world):
    pid, ssh = daemon.running_pid(), wait_link_up(world.engine)["pid"]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(ssh), timeout=10, what="the daemon's ssh to end with it")
    wait_for(lambda: daemon.running_pid() is None, timeout=10, what="the daemon gone")
    daemon.start()  # what the next apply does; the route table and links are files: served at once
    wait_link_up(world.engine)
    status, _, body = request("web.solo.localhost", world.port, "/")
    assert status == 200, body[:300]
