"""Grants end to end on the real engine: `fleet apply` creates agents whose
curl and git reach a fake upstream (HTTPS on 127.0.0.1 with its own CA, through
FLEET_RESOLVE and FLEET_UPSTREAM_CA) with the credential injected by the
forward proxy, while the token never enters a container, an inspect, a file
on the container's disk, fleet's output or the store file."""

from __future__ import annotations

import base64
import json
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from reconciler.grants.forward import bridge_gateway
from tests.conftest import cleanup_fleet, free_port, run_fleet

from .helpers import Upstream

pytestmark = pytest.mark.docker

TOKEN = "ghp_E2E" + uuid.uuid4().hex
OTHER = "sk-ant-E2E" + uuid.uuid4().hex


def _free_on(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class World:
    def __init__(self, tmp: Path, client, image: str):
        self.client = client
        self.home = tmp / "home"
        self.home.mkdir()
        self.up = Upstream(tmp / "upstream-ca", names=("api.github.com", "github.com"))
        gateway = bridge_gateway()
        assert gateway, "no Docker bridge gateway on this machine"
        self.grants_port = _free_on(gateway)
        self.env = {
            "FLEET_HOME": str(self.home),
            "FLEET_KEYRING": "off",
            "FLEET_RESOLVE": f"api.github.com=127.0.0.1:{self.up.port},github.com=127.0.0.1:{self.up.port}",
            "FLEET_UPSTREAM_CA": self.up.ca_file,
            "FLEET_GRANTS_PORT": str(self.grants_port),
        }
        self.name = "g" + uuid.uuid4().hex[:10]
        self.dir = tmp / "project"
        self.dir.mkdir()
        self.file = self.dir / "fleet.yaml"
        self.outputs: list[str] = []
        self.image = image

    def fleet(self, *args: str, input: str | None = None):
        r = run_fleet(*args, cwd=self.dir, env=self.env, input=input)
        self.outputs.append(r.text)
        return r

    def write(self, text: str) -> None:
        self.file.write_text(textwrap.dedent(text))

    def container(self, agent: str):
        return self.client.containers.get(f"fleet_{self.name}_{agent}")

    def sh(self, agent: str, cmd: str) -> tuple[int, str]:
        code, out = self.container(agent).exec_run(["/bin/sh", "-c", cmd])
        return code, out.decode(errors="replace")


@pytest.fixture(scope="module")
def world(tmp_path_factory, docker_client, base_image):
    w = World(tmp_path_factory.mktemp("grants-e2e"), docker_client, base_image)
    try:
        # a fresh proxy process that sees FLEET_RESOLVE and FLEET_UPSTREAM_CA, on a free routing port
        r = w.fleet("proxy", "start", "--port", str(free_port()))
        assert r.code == 0, r.text
        r = w.fleet("grant", "set", "github", input=TOKEN + "\n")
        assert r.code == 0, r.text
        r = w.fleet("grant", "set", "anthropic", input=OTHER)
        assert r.code == 0, r.text
        w.write(f"""
            fleet: {w.name}
            defaults:
              image: {base_image}
              command: ["sleep", "infinity"]
            hosts:
              box: {{}}
            agents:
              coder:
                grants: [github]
              other:
                grants: [anthropic]
              plain: {{}}
              pair:
                host: box
                grants: [github]
            """)
        r = w.fleet("apply")
        assert r.code == 0, r.text
        yield w
    finally:
        w.fleet("proxy", "stop")
        cleanup_fleet(docker_client, w.name)
        w.up.stop()


def _headers(text: str) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(text)["headers"]}


def test_apply_refuses_a_grant_that_is_not_stored(world, tmp_path):
    other = tmp_path / "fleet.yaml"
    other.write_text(f"fleet: {world.name}x\nagents:\n  a: {{image: {world.image}, grants: [openai, npm]}}\n")
    r = run_fleet("apply", str(other), env=world.env)
    assert r.code == 1
    assert "grants not stored: npm (agent a); openai (agent a)" in r.err
    assert "`fleet grant set npm`" in r.err and "`fleet grant set openai`" in r.err
    assert world.client.containers.list(all=True, filters={"label": f"dev.fleet.project={world.name}x"}) == []


def test_curl_in_an_agent_with_the_grant_gets_the_header(world):
    code, out = world.sh("coder", "curl -sS -H 'Authorization: Bearer placeholder' https://api.github.com/echo/user")
    assert code == 0, out
    assert _headers(out)["authorization"] == f"Bearer {TOKEN}"
    # Python's standard library, without flags (HTTPS_PROXY, SSL_CERT_FILE)
    code, out = world.sh("coder", "python3 -c \"import urllib.request as u; print(u.urlopen('https://api.github.com/echo/py').read().decode())\"")
    assert code == 0, out
    assert _headers(out)["authorization"] == f"Bearer {TOKEN}"
    # an agent of a shared host (joined to the holder's network) gets it too
    code, out = world.sh("pair", "curl -sS https://api.github.com/echo/pair")
    assert code == 0, out
    assert _headers(out)["authorization"] == f"Bearer {TOKEN}"


def test_git_over_https_gets_basic_auth(world):
    before = len(world.up.requests)
    code, out = world.sh("coder", "git ls-remote https://github.com/x/y.git")
    assert code == 0, out
    assert "refs/heads/main" in out
    refs = [r for r in world.up.requests[before:] if r["path"].startswith("/x/y.git/info/refs")]
    assert refs, world.up.requests[before:]
    auth = {k.lower(): v for k, v in refs[0]["headers"]}["authorization"]
    assert auth == "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


def test_an_agent_without_the_grant_is_tunnelled_and_gets_nothing(world):
    # holding only `anthropic`, its CONNECT to api.github.com is a plain tunnel: it meets
    # the upstream's own certificate (not trusted by the agent)...
    code, out = world.sh("other", "curl -sS https://api.github.com/echo/x; echo rc=$?")
    assert "rc=60" in out, out
    # ...and past that, no credential was added
    code, out = world.sh("other", "curl -sS -k https://api.github.com/echo/x")
    assert code == 0, out
    assert "authorization" not in _headers(out) and "x-api-key" not in _headers(out)
    # an agent without grants has no proxy at all, and its bundle (system CAs and
    # the routing CA, for fleet URLs) does not hold the interception CA
    code, out = world.sh("plain", "env")
    assert "HTTPS_PROXY" not in out and "SSL_CERT_FILE=/etc/fleet/ca-bundle.crt" in out
    code, out = world.sh("plain", "grep -c 'fleet grants interception CA' /etc/fleet/ca-bundle.crt; grep -c 'fleet routing CA' /etc/fleet/ca-bundle.crt")
    assert out.split() == ["0", "1"], out
    # an agent with grants trusts both: the interception CA and the routing CA
    code, out = world.sh("coder", "grep -c 'fleet grants interception CA' /etc/fleet/ca-bundle.crt; grep -c 'fleet routing CA' /etc/fleet/ca-bundle.crt")
    assert out.split() == ["1", "1"], out


def test_a_bad_proxy_credential_gets_407(world):
    cmd = 'P="${HTTPS_PROXY##*@}"; curl -s -o /dev/null -w "%{http_code}" -x "http://fleet:wrong@$P" http://example.test/'
    code, out = world.sh("coder", cmd)
    assert out == "407", out
    cmd = 'P="${HTTPS_PROXY##*@}"; curl -s -o /dev/null -w "%{http_connect}" -x "http://fleet:wrong@$P" https://api.github.com/'
    code, out = world.sh("coder", cmd)
    assert out == "407", out
    assert "407" in (world.home / "proxy.log").read_text()


def test_the_network_log(world):
    world.sh("coder", "curl -sS https://api.github.com/echo/logged?secret=1")
    r = world.fleet("logs", "coder", "--network")
    assert r.code == 0, r.text
    line = [ln for ln in r.out.splitlines() if "/echo/logged" in ln][-1]
    assert "github" in line and "api.github.com" in line and "200" in line and "secret=1" not in line
    entries = [json.loads(x) for x in (world.home / "network" / world.name / "coder.log").read_text().splitlines()]
    assert {"method", "host", "path", "status", "grant"} <= set(entries[-1])


def test_the_secret_is_nowhere_but_the_proxy(world):
    for agent in ("coder", "pair", "other", "plain"):
        c = world.container(agent)
        inspect = json.dumps(world.client.api.inspect_container(c.id))
        assert TOKEN not in inspect and OTHER not in inspect
        code, env = world.sh(agent, "env")
        assert TOKEN not in env and OTHER not in env
    # the proxy credential is there, the token is not
    env = world.container("coder").attrs["Config"]["Env"]
    assert any(e.startswith("HTTPS_PROXY=http://fleet:") and "@fleet-proxy:" in e for e in env)
    assert "SSL_CERT_FILE=/etc/fleet/ca-bundle.crt" in env
    # no file of the container's filesystem holds it
    code, out = world.sh(
        "coder",
        f"grep -r -l -F -s -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev '{TOKEN}' / ; echo rc=$?",
    )
    assert out.strip().endswith("rc=1"), out
    # fleet's own output: plans, JSON, status
    for args in (("diff",), ("diff", "--output", "json"), ("status", "--output", "json"), ("grant", "list", "-o", "json")):
        r = world.fleet(*args)
        assert r.code in (0, 2), r.text
    r = world.fleet("apply")
    assert r.code == 0 and "up to date" in r.out, r.text  # per-agent credentials do not churn the plan
    for text in world.outputs:
        assert TOKEN not in text and OTHER not in text
    # nothing under FLEET_HOME holds it in clear: store file, agent map, logs
    for path in world.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and OTHER.encode() not in data, path
    stored = world.home / "credentials" / "github.json"
    assert stored.exists() and b"ciphertext" in stored.read_bytes()


def _holders(world) -> dict[str, str | None]:
    data = json.loads((world.home / "grants" / "agents.json").read_text())
    return {v["agent"]: v.get("container") for v in data["agents"].values() if v["fleet"] == world.name}


def test_zz_credentials_are_plan_actions_issued_and_revoked(world):
    """Last in this module (it changes the fleet): the plan issues a credential
    with each create of an agent with grants and revokes the credentials of
    agents that go or lose their grants; applying it does exactly that."""
    assert _holders(world) == {a: world.container(a).id for a in ("coder", "other", "pair")}
    old = next(e for e in world.container("coder").attrs["Config"]["Env"] if e.startswith("HTTPS_PROXY="))
    old_credential = old.split("://fleet:", 1)[1].split("@", 1)[0]
    world.write(f"""
        fleet: {world.name}
        defaults:
          image: {world.image}
          command: ["sleep", "infinity"]
        hosts:
          box: {{}}
        agents:
          coder: {{}}
          plain:
            grants: [github]
          pair:
            host: box
            grants: [github]
        """)
    r = world.fleet("diff")
    assert "revoke   credentials coder  agent coder has no grants" in r.out, r.text
    assert "revoke   credentials other  agent other is not in fleet.yaml" in r.out, r.text
    assert "issue    credentials plain  agent plain has grants: github" in r.out, r.text
    assert "1 credential to issue, 2 credentials to revoke" in r.out, r.text
    r = world.fleet("diff", "-o", "json")
    changes = {c["id"]: c for c in json.loads(r.out)["changes"]}
    assert changes["credentials:plain:issue"]["kind"] == "credentials"
    assert "credentials:plain:issue" in changes["agent:plain"]["depends_on"]
    assert changes["credentials:coder:revoke"]["depends_on"] == ["agent:coder"]
    r = world.fleet("apply")
    assert r.code == 0, r.text
    # coder and other hold nothing any more; plain holds a credential bound to its new container
    assert _holders(world) == {"plain": world.container("plain").id, "pair": world.container("pair").id}
    code, out = world.sh("plain", "curl -sS https://api.github.com/echo/plain")
    assert code == 0 and _headers(out)["authorization"] == f"Bearer {TOKEN}", out
    # the revoked credential is refused
    port = old.rsplit(":", 1)[1]
    cmd = f'curl -s -o /dev/null -w "%{{http_connect}}" -x "http://fleet:{old_credential}@fleet-proxy:{port}" https://api.github.com/'
    code, out = world.sh("plain", cmd)
    assert out == "407", out
    r = world.fleet("apply")
    assert r.code == 0 and "up to date" in r.out, r.text
