"""The shared-host workflow on Modal, end to end: the real `fleet` CLI (each run its
own process and `modal.Client.from_env()`) through the real `modal` SDK against the
fake control plane, whose sandboxes are real containers and whose tunnels are real
TLS endpoints. The same assertions as for Docker: one sandbox, two agents sharing
/workspace, exec, logs, messages, one agent replaced while its neighbour runs,
routes through the proxy, teardown with the last agent (snapshot kept, restorable)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import docker
import pytest

from reconciler.core.model import MODAL_ROUTER_PORT
from reconciler.providers.modal.driver import AGENT_TAG
from tests.conftest import free_port
from tests.modal.helpers import curl, exec_text, fleet, fleet_yaml, got, sandboxes, terminate_fleet, wait_for

pytestmark = pytest.mark.docker

# A no-op apply: the listing (a page, then the empty page that ends it), one get_tags
# per host sandbox, and the SDK's own session token for a new client process.
OBSERVE_ONLY = {"SandboxListV2", "SandboxTagsGetV2", "AuthTokenGet"}


@pytest.fixture
def modal_fleet(fake_modal, fleet_name, tmp_path):
    """A fleet name whose sandboxes are terminated after the test, whatever happens."""
    try:
        yield fleet_name
    finally:
        terminate_fleet(fake_modal, fleet_name)


# the whole guide in one test (about 25 CLI runs): 76 s alone, 214-300 s with the suite's
# other files running beside it on 2 vCPUs; the 300 s default guards against hangs, not this
@pytest.mark.timeout(600)
def test_shared_host_workflow(fake_modal, modal_fleet, tmp_path, fleet_home):
    env = fake_modal.env()
    name = modal_fleet
    ws = tmp_path / "app"
    (ws / "app" / "auth").mkdir(parents=True)
    (ws / "README.md").write_text("JWT auth for a FastAPI app\n")
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(name, port, ws))

    # -- one provisioning step: a named, tagged sandbox with both agents on it
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "create   host auth-host" in r.out and "join     agent impl-agent" in r.out, r.out
    [sb] = sandboxes(fake_modal, name)
    assert sb.name == "auth-host"
    assert {k: sb.tags[k] for k in ("dev.fleet.project", "dev.fleet.kind", "dev.fleet.host")} == {
        "dev.fleet.project": name, "dev.fleet.kind": "host", "dev.fleet.host": "auth-host"}
    assert set(k for k in sb.tags if k.startswith(AGENT_TAG)) == {AGENT_TAG + "impl-agent", AGENT_TAG + "test-agent"}
    assert all(len(v) <= 63 and re.fullmatch(r"[A-Za-z0-9._-]+", v) for v in sb.tags.values()), sb.tags
    assert sb.idle_timeout_secs == 600 and sb.timeout_secs == 3600
    assert list(sb.tunnels) == [MODAL_ROUTER_PORT]  # one tunnel, to the host's port router
    container = docker.from_env().containers.get(sb.container_id)
    assert container.attrs["Config"]["WorkingDir"] == "/workspace"

    # -- the workspace was uploaded, and both agents share it
    assert exec_text(path, env, "test-agent", "cat README.md") == "JWT auth for a FastAPI app\n"
    exec_text(path, env, "impl-agent", "echo 'def issue_token(): ...' > app/auth/tokens.py")
    assert exec_text(path, env, "test-agent", "cat /workspace/app/auth/tokens.py") == "def issue_token(): ...\n"
    r = fleet("exec", "-f", str(path), "test-agent", "--", "sh", "-c", "echo oops >&2; exit 7", env=env)
    assert r.code == 7 and "oops" in r.err, r.text
    r = fleet("exec", "-f", str(path), "test-agent", "--", "no-such-program", env=env)
    assert r.code in (126, 127), r.text

    # -- first messages reached each agent's read loop; `fleet message` reaches only its agent
    wait_for(lambda: got(path, env, "impl-agent", "impl") == ["Implement JWT authentication"], what="impl's first message")
    wait_for(lambda: got(path, env, "test-agent", "test") == ["Write integration tests"], what="test's first message")
    r = fleet("message", "-f", str(path), "test-agent", "Focus on HTTP-level tests", env=env)
    assert r.code == 0, r.text
    wait_for(lambda: got(path, env, "test-agent", "test")[-1:] == ["Focus on HTTP-level tests"], what="message")
    assert got(path, env, "impl-agent", "impl") == ["Implement JWT authentication"]
    r = fleet("logs", "-f", str(path), "impl-agent", "--tail", "1", env=env)
    assert r.code == 0 and r.out.replace("\r", "") == "impl got: Implement JWT authentication\n", r.text

    # -- a route through the proxy reaches the agent's port 3000 in the sandbox (a TLS tunnel)
    exec_text(path, env, "impl-agent", "mkdir -p /srv && echo impl-web > /srv/index.html && "
              "(nohup python3 -m http.server 3000 --directory /srv >/dev/null 2>&1 &)")
    url = f"https://web.impl-agent.localhost:{port}/"
    assert wait_for(lambda: curl(url, fleet_home) == (200, "impl-web"), what=f"{url}: {curl(url, fleet_home)}")
    route = json.loads((fleet_home / "routes.json").read_text())["fleets"][name]["routes"][0]
    assert route["target"] == f"https://127.0.0.1:{sb.tunnels[MODAL_ROUTER_PORT].tls_port}"
    assert route["inner_port"] == 3000

    # -- a no-op apply observes with one listing and one get_tags per host: no exec, no change
    fake_modal.rpcs.reset()
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0 and f"fleet {name} is up to date" in r.out, r.text
    rpcs = fake_modal.rpcs.snapshot()
    assert set(rpcs) <= OBSERVE_ONLY and rpcs["SandboxTagsGetV2"] == 1 and rpcs.get("AuthTokenGet", 0) <= 1, rpcs
    assert rpcs["SandboxListV2"] == 2, rpcs

    # -- one agent replaced (env change); its neighbour keeps running, untouched
    before = exec_text(path, env, "impl-agent", "cat /run/fleet/impl-agent/pid /run/fleet/impl-agent/agent.pid")
    test_pid = exec_text(path, env, "impl-agent", "cat /run/fleet/test-agent/pid")
    path.write_text(fleet_yaml(name, port, ws, test_env="env: {TZ: Europe/Paris}"))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "replace  agent test-agent" in r.out and "spec changed: env.TZ" in r.out, r.out
    assert "impl-agent" not in r.out.split("Plan for")[0].replace("route", ""), r.out
    assert exec_text(path, env, "impl-agent", "cat /run/fleet/impl-agent/pid /run/fleet/impl-agent/agent.pid") == before
    assert exec_text(path, env, "impl-agent", "cat /run/fleet/test-agent/pid") != test_pid
    assert exec_text(path, env, "test-agent", 'echo "$TZ"') == "Europe/Paris\n"
    wait_for(lambda: got(path, env, "test-agent", "test") == ["Write integration tests"], what="first message again")
    assert got(path, env, "impl-agent", "impl") == ["Implement JWT authentication"]
    assert [s.id for s in sandboxes(fake_modal, name)] == [sb.id]  # same sandbox all along

    # -- pull the working directory back
    r = fleet("pull", "-f", str(path), "impl-agent", str(tmp_path / "pulled"), env=env)
    assert r.code == 0, r.text
    assert (tmp_path / "pulled" / "app" / "auth" / "tokens.py").read_text() == "def issue_token(): ...\n"

    # -- the last agent gone: the host goes too, after a snapshot of its filesystem
    path.write_text(fleet_yaml(name, port, ws, agents=False))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "destroy  host auth-host" in r.out, r.out
    m = re.search(r"snapshot (im-[A-Za-z0-9]+)", r.out)
    assert m, r.out
    assert sandboxes(fake_modal, name) == []
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(sb.container_id)
    record = json.loads((fleet_home / "snapshots" / name / "auth-host.json").read_text())
    assert record["image_id"] == m.group(1) and record["sandbox_id"] == sb.id

    # -- restore: latest brings the work back in a new sandbox
    path.write_text(fleet_yaml(name, port, ws))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert f"started from snapshot {m.group(1)}" in r.out, r.out
    [again] = sandboxes(fake_modal, name)
    assert again.id != sb.id
    assert exec_text(path, env, "test-agent", "cat app/auth/tokens.py") == "def issue_token(): ...\n"

    # -- the host removed from fleet.yaml altogether: still found (the fleet used Modal), destroyed
    path.write_text(f"fleet: {name}\nproxy: {{port: {port}}}\n")
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "destroy  host auth-host" in r.out and "not in fleet.yaml" in r.out, r.out
    assert sandboxes(fake_modal, name) == []
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0 and "up to date" in r.out, r.text


def test_bad_credentials_and_unreachable_server_are_one_line(fake_modal, modal_fleet, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(modal_fleet, free_port(), tmp_path))
    cases = {
        "wrong secret": ({**fake_modal.env(), "MODAL_TOKEN_SECRET": "as-wrong"}, "MODAL_TOKEN_ID/MODAL_TOKEN_SECRET"),
        "no token": ({**fake_modal.env(), "MODAL_TOKEN_ID": "", "MODAL_TOKEN_SECRET": ""}, "modal token new"),
        "server down": ({**fake_modal.env(), "MODAL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}, "cannot reach Modal"),
    }
    for case, (env, expected) in cases.items():
        for cmd in ("diff", "apply"):
            r = fleet(cmd, "-f", str(path), env=env)
            assert r.code == 1, (case, r.text)
            lines = [ln for ln in r.err.splitlines() if ln.strip()]
            assert len(lines) == 1 and expected in lines[0], (case, r.text)
            assert "Traceback" not in r.text
    assert sandboxes(fake_modal, modal_fleet) == []
