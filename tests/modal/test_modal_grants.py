"""Grants for an agent on a Modal host, end to end: the real `fleet` CLI through the
real `modal` SDK against the fake control plane (sandboxes are real containers),
the real forward proxy in the fleet proxy process and a fake HTTPS upstream here
(FLEET_RESOLVE). `fleet apply` starts the host's relay (a process on this
machine, recorded under $FLEET_HOME/relays/); curl in the sandbox reaches the
upstream with the token injected here, and the token is in no file, environment
or command line of the sandbox. A no-op apply changes nothing; dropping the
grant revokes the credential (407) and stops the relay; a relay that died is
started again by the next apply; `fleet destroy` stops it."""

from __future__ import annotations

import json
import os
import signal
import textwrap
import uuid
from pathlib import Path

import docker
import pytest

from reconciler.grants.forward import bridge_gateway
from reconciler.state import relays
from tests.conftest import free_port, wait_for
from tests.grants.helpers import Upstream
from tests.modal.helpers import fleet, sandboxes, terminate_fleet
from tests.modal.test_backhaul_grants import FIND as FIND_ALL

# the same search, over regular files only (the agents' supervisors keep FIFOs, which would block it)
FIND = FIND_ALL.replace("            try:\n                if token in open(", "            try:\n                if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)) and token in open(")
assert FIND != FIND_ALL

pytestmark = pytest.mark.docker

TOKEN = "ghp_MODAL" + uuid.uuid4().hex


def _free_on(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _yaml(name: str, proxy_port: int, grants: bool, keeper: bool = False) -> str:
    return textwrap.dedent(f"""
        fleet: {name}
        proxy: {{port: {proxy_port}}}
        hosts:
          box:
            provider: modal
            image: python:3.12-slim
            timeout: 3600
        agents:
          coder:
            host: box
            command: ["sleep", "100000"]
            {"grants: [github]" if grants else ""}
    """) + ("  keeper:\n    host: box\n    command: [\"sleep\", \"100000\"]\n    grants: [github]\n" if keeper else "")


@pytest.fixture
def world(fake_modal, fleet_name, tmp_path, fleet_home):
    up = Upstream(tmp_path / "upstream-ca", names=("api.github.com",))
    bundle = tmp_path / "upstream-cas.pem"  # the fake's tunnels and the fake upstream, one trust file
    bundle.write_text(Path(fake_modal.env()["FLEET_UPSTREAM_CA"]).read_text() + Path(up.ca_file).read_text())
    gateway = bridge_gateway()
    assert gateway, "no Docker bridge gateway on this machine"
    env = {**fake_modal.env(), "FLEET_HOME": str(fleet_home), "FLEET_KEYRING": "off",
           "FLEET_RESOLVE": f"api.github.com=127.0.0.1:{up.port}", "FLEET_UPSTREAM_CA": str(bundle),
           "FLEET_GRANTS_PORT": str(_free_on(gateway))}
    path = tmp_path / "fleet.yaml"
    proxy_port = free_port()
    try:
        r = fleet("proxy", "start", "--port", str(proxy_port), env=env)  # a proxy process that sees this env
        assert r.code == 0, r.text
        r = fleet("grant", "set", "github", env=env, input=TOKEN + "\n")
        assert r.code == 0, r.text
        yield env, path, proxy_port, up
    finally:
        for host in relays.running(fleet_name):
            relays.stop(fleet_name, host)
        fleet("proxy", "stop", env=env)
        terminate_fleet(fake_modal, fleet_name)
        up.stop()


def _curl(path: Path, env: dict[str, str], agent: str = "coder", proxy: str = "") -> tuple[int, str]:
    r = fleet("exec", "-f", str(path), agent, "--", "sh", "-c",
              f"curl -sS --max-time 20 {proxy} -H 'Authorization: Bearer placeholder' "
              "-w '\\n%{http_connect} %{http_code}' https://api.github.com/echo/user", env=env)
    return r.code, r.out


def test_modal_agent_uses_its_grant_through_the_relay(fake_modal, fleet_name, world):
    env, path, proxy_port, up = world
    path.write_text(_yaml(fleet_name, proxy_port, grants=True, keeper=True))

    r = fleet("diff", "-f", str(path), env=env)
    assert "relay box" in r.out and "agents coder, keeper on host box have grants; it is not running" in r.out, r.out
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    [pid] = relays.running(fleet_name).values()

    code, out = _curl(path, env)
    assert code == 0 and out.endswith("200 200"), out  # CONNECT to the relay, then the request inside
    assert up.headers_of()["authorization"] == f"Bearer {TOKEN}"
    r = fleet("exec", "-f", str(path), "coder", "--", "sh", "-c", "echo $HTTPS_PROXY", env=env)
    coder_proxy = r.out.strip()
    assert coder_proxy.startswith("http://fleet:") and coder_proxy.endswith(f"@127.0.0.1:{relays.SANDBOX_PORT}"), r.out

    # nothing in the sandbox holds the token (the search finds what is there: the CA bundle)
    [sb] = sandboxes(fake_modal, fleet_name)
    box = docker.from_env().containers.get(sb.container_id)
    code, found = box.exec_run(["python3", "-c", FIND, TOKEN[:10], TOKEN[10:]])
    assert code == 0 and found.decode() == "", found
    code, found = box.exec_run(["python3", "-c", FIND, "-----BEGIN ", "CERTIFICATE-----"])
    assert b"/etc/fleet/ca-bundle.crt" in found, found
    assert TOKEN not in json.dumps(box.attrs)

    # nothing to do: up to date, the same relay
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0 and "up to date" in r.out, r.out
    assert relays.running(fleet_name) == {"box": pid}

    # a relay that died is started again by the next apply (the credentials still work)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not relays.running(fleet_name), timeout=10)
    r = fleet("diff", "-f", str(path), env=env)
    assert "relay box" in r.out, r.out
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert list(relays.running(fleet_name)) == ["box"]
    n = len(up.requests)
    code, out = _curl(path, env)
    assert out.endswith("200 200") and len(up.requests) == n + 1, out

    # coder's grant removed: its credential is revoked; keeper's still works through the relay
    path.write_text(_yaml(fleet_name, proxy_port, grants=False, keeper=True))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "revoke" in r.out and "credentials coder" in r.out, r.out
    n = len(up.requests)
    code, out = _curl(path, env, "keeper", proxy=f"-x {coder_proxy}")
    assert out.endswith("407 000"), out
    assert len(up.requests) == n
    code, out = _curl(path, env, "keeper")
    assert out.endswith("200 200"), out

    # no agent on the box has grants any more: the relay stops
    path.write_text(_yaml(fleet_name, proxy_port, grants=False))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "no agent on host box has grants" in r.out, r.out
    assert relays.running(fleet_name) == {}


def test_destroy_stops_the_relay(fake_modal, fleet_name, world):
    env, path, proxy_port, up = world
    path.write_text(_yaml(fleet_name, proxy_port, grants=True))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    [pid] = relays.running(fleet_name).values()
    r = fleet("destroy", "-f", str(path), "--yes", env=env)
    assert r.code == 0, r.text
    assert "relay box" in r.out, r.out
    assert relays.running(fleet_name) == {}
    assert not Path(f"/proc/{pid}").exists() or b"relayd" not in Path(f"/proc/{pid}/cmdline").read_bytes()
