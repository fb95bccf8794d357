"""Grants for agents on a remote engine, on the real thing: `fleet apply` of a
fleet.yaml whose shared host and private agent name `engine: ssh://NAME`; their
`credentials issue` has the proxy daemon's ssh link to that engine carry a
reverse forward from the remote `fleet_agents` gateway back to this machine's
forward proxy, which injects the token. The token is in no remote container, no
remote inspect, no file of the remote container's disk or of the remote engine's
container records; a local container presenting the remote agent's credential
gets 407 (it is bound to the engine's loopback source, not to an address a
container can have)."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from reconciler.grants.forward import bridge_gateway
from reconciler.net.ca import routing_ca
from reconciler.routing import daemon
from reconciler.state.links import read_links, remote_port_for, source_for_engine
from tests.conftest import free_port, wait_for
from tests.grants.helpers import Upstream
from tests.remote.world import RemoteFleet, link_state
from tests.routing.helpers import client_ssl, request

pytestmark = pytest.mark.docker

TOKEN = "ghp_REMOTE" + uuid.uuid4().hex

YAML = """\
fleet: {fleet}
proxy: {{port: PORT}}
defaults:
  image: {image}
  command: ["sh", "-c", "cd /tmp && exec python3 -m http.server 3000"]
hosts:
  box: {{engine: "{engine}"}}
agents:
  coder:
    host: box
    grants: [github]
    ports: {{web: 3000}}
  solo:
    engine: "{engine}"
    grants: [github]
  plain:
    engine: "{engine}"
"""


def _free_on(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(remote_engine, base_image, tmp_path_factory, docker_client):
    tmp = tmp_path_factory.mktemp("remote-grants")
    home = tmp / "home"
    home.mkdir()
    up = Upstream(tmp / "upstream-ca", names=("api.github.com", "github.com"))
    gateway = bridge_gateway()
    assert gateway
    env = {
        "FLEET_HOME": str(home), "FLEET_KEYRING": "off",
        "FLEET_RESOLVE": f"api.github.com=127.0.0.1:{up.port},github.com=127.0.0.1:{up.port}",
        "FLEET_UPSTREAM_CA": up.ca_file, "FLEET_GRANTS_PORT": str(_free_on(gateway)),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    port = free_port()
    w = RemoteFleet(tmp, remote_engine, base_image, YAML.replace("PORT", str(port)), env)
    w.home, w.up, w.port, w.local = home, up, port, []
    try:
        r = w.fleet("grant", "set", "github", input=TOKEN + "\n")
        assert r.code == 0, r.text
        r = w.fleet("plan", "--out", str(tmp / "plan.json"))
        assert r.code in (0, 2), r.text
        w.plan = json.loads((tmp / "plan.json").read_text())
        r = w.fleet("apply", "--yes")
        assert r.code == 0, r.text
        yield w
    finally:
        w.cleanup()
        daemon.stop()
        for c in w.local:
            c.remove(force=True)
        up.stop()
        mp.undo()


@pytest.fixture(autouse=True)
def _world_home(world, fleet_home, monkeypatch):
    for k, v in world.env.items():
        monkeypatch.setenv(k, v)


def sh(world, agent: str, cmd: str) -> tuple[int, str]:
    code, out = world.container(agent).exec_run(["/bin/sh", "-c", cmd])
    return code, out.decode(errors="replace")


def headers(text: str) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(text)["headers"]}


def test_the_plan_issues_credentials_and_the_link_carries_the_reverse_forward(world):
    issued = sorted(a["name"] for a in world.plan["plan"]["actions"] if a["kind"] == "credentials" and a["op"] == "issue")
    assert issued == ["coder", "solo"]
    rec = read_links()[world.engine]
    assert rec["port"] == remote_port_for(world.engine)
    link = link_state(world.engine)
    assert link["up"] and link["reverse"] == f"{rec['gateway']}:{rec['port']}"
    assert link["source"] == source_for_engine(world.engine)
    # the gateway is the remote fleet_agents network's
    net = world.remote.docker().api.inspect_network("fleet_agents")
    assert rec["gateway"] == net["IPAM"]["Config"][0]["Gateway"]
    # the credentials are bound to the engine's loopback source
    data = json.loads((world.home / "grants" / "agents.json").read_text())
    bound = {v["agent"]: v.get("container") for v in data["agents"].values() if v["fleet"] == world.name}
    assert bound == {"coder": f"loopback:{source_for_engine(world.engine)}",
                     "solo": f"loopback:{source_for_engine(world.engine)}"}


@pytest.mark.parametrize("agent", ["coder", "solo"])
def test_a_remote_agent_gets_the_token_injected_here(world, agent):
    before = len(world.up.requests)
    code, out = sh(world, agent, "curl -sS -H 'Authorization: Bearer placeholder' https://api.github.com/echo/" + agent)
    assert code == 0, out
    assert headers(out)["authorization"] == f"Bearer {TOKEN}"
    assert len(world.up.requests) == before + 1  # it reached the upstream on this machine
    # Python's standard library too (HTTPS_PROXY and SSL_CERT_FILE, the bundle copied in)
    code, out = sh(world, agent, "python3 -c \"import urllib.request as u; print(u.urlopen('https://api.github.com/echo/py').read().decode())\"")
    assert code == 0, out
    assert headers(out)["authorization"] == f"Bearer {TOKEN}"


def test_an_agent_without_grants_has_no_proxy(world):
    code, out = sh(world, "plain", "env")
    assert "HTTPS_PROXY" not in out and TOKEN not in out


def test_the_token_is_absent_remote_side(world):
    api = world.remote.docker().api
    for agent in ("coder", "solo", "plain"):
        c = world.container(agent)
        assert TOKEN not in json.dumps(api.inspect_container(c.id))
        code, env = sh(world, agent, "env")
        assert TOKEN not in env
        code, out = sh(world, agent, f"grep -r -l -F -s -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
                                     f"'{TOKEN}' / ; echo rc=$?")
        assert out.strip().endswith("rc=1"), out
    holder = world.remote.docker().containers.get(f"fleet_{world.name}_host_box")
    assert TOKEN not in json.dumps(api.inspect_container(holder.id))
    # the proxy URL with the credential and the bundle are there, the token is not
    env = world.container("coder").attrs["Config"]["Env"]
    rec = read_links()[world.engine]
    assert any(e.startswith("HTTPS_PROXY=http://fleet:") and e.endswith(f"@{rec['gateway']}:{rec['port']}") for e in env)
    code, out = sh(world, "coder", "grep -c 'fleet grants interception CA' /etc/fleet/ca-bundle.crt")
    assert out.strip() == "1", out
    # the remote engine's records of its containers (config, host config, logs)
    root = f"/var/lib/fleet-remote/{world.remote.name}/docker/containers"
    r = subprocess.run(["grep", "-r", "-l", "-F", TOKEN, root], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    # a second apply changes nothing (the remote credentials do not churn), and no output of fleet holds it
    r = world.fleet("apply", "--yes")
    assert r.code == 0 and "up to date" in r.out, r.text
    world.fleet("status", "--output", "json")
    assert not [t for t in world.outputs if TOKEN in t]


def _credential(world, agent: str) -> str:
    env = world.container(agent).attrs["Config"]["Env"]
    url = next(e for e in env if e.startswith("HTTPS_PROXY="))
    return url.split("http://fleet:", 1)[1].split("@", 1)[0]


def test_a_local_container_presenting_a_remote_agents_credential_gets_407(world, docker_client, base_image):
    cred = _credential(world, "coder")
    grants = f"{bridge_gateway()}:{world.env['FLEET_GRANTS_PORT']}"
    c = docker_client.containers.run(base_image, ["sleep", "300"], detach=True, remove=False,
                                     labels={"dev.fleet.test": world.name})
    world.local.append(c)
    cmd = f'curl -s -o /dev/null -w "%{{http_connect}}" -x "http://fleet:{cred}@{grants}" https://api.github.com/echo/stolen'
    code, out = c.exec_run(["/bin/sh", "-c", cmd])
    assert out.decode() == "407", out
    # and the real one, through the remote link, still works
    code, out = sh(world, "coder", "curl -sS https://api.github.com/echo/again")
    assert code == 0 and headers(out)["authorization"] == f"Bearer {TOKEN}", out
    assert not any(r["path"] == "/echo/stolen" for r in world.up.requests)


def test_the_remote_agents_route_answers_too(world):
    status, _, body = request("web.coder.localhost", world.port, "/", tls=client_ssl(routing_ca()))
    assert status == 200, body[:300]


@pytest.mark.slow
def test_a_killed_link_comes_back_with_its_reverse_forward_and_grants_work_again(world):
    import os
    import signal

    from tests.remote.helpers import alive

    for _ in range(3):
        first = link_state(world.engine)["pid"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), timeout=10, what="ssh to die")
        wait_for(lambda: link_state(world.engine).get("up") and link_state(world.engine).get("pid") != first,
                 timeout=40, interval=0.05, what=f"the link back ({link_state(world.engine)})")
        assert link_state(world.engine)["reverse"]
        code, out = sh(world, "solo", "curl -sS https://api.github.com/echo/after-kill")
        assert code == 0 and headers(out)["authorization"] == f"Bearer {TOKEN}", out


def test_zz_the_link_drops_the_reverse_forward_when_no_credential_needs_it(world):
    from reconciler.grants.inject import revoke

    for agent in ("coder", "solo"):
        revoke(world.name, agent)
    wait_for(lambda: link_state(world.engine).get("up") and link_state(world.engine).get("reverse") is None,
             timeout=30, what=f"the link without its reverse forward ({link_state(world.engine)})")
    status, _, _ = request("web.coder.localhost", world.port, "/")  # the route still needs the link
    assert status == 200
