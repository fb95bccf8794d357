"""The shared-host scenario against the real Modal service (not run by default).

    MODAL_TOKEN_ID=... MODAL_TOKEN_SECRET=... .venv/bin/pytest -m realmodal tests/modal

Same steps as test_shared_host.py, asserted only through the `fleet` CLI (no fake
to look inside). It creates one sandbox in app `fleet-<random name>` on your
account and terminates it at the end (`fleet destroy`, also on failure); the app
itself stays (stop it with `modal app stop fleet-<name>` if you like).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import free_port
from tests.modal.helpers import curl, exec_text, fleet, fleet_yaml, got, wait_for

pytestmark = [
    pytest.mark.realmodal,
    pytest.mark.skipif(not os.environ.get("MODAL_TOKEN_ID"), reason="set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET to run"),
]


def test_shared_host_workflow_on_real_modal(fleet_name, tmp_path, fleet_home):
    env = {"FLEET_UPSTREAM_CA": ""}  # real tunnels carry publicly trusted certificates
    ws = tmp_path / "app"
    (ws / "app" / "auth").mkdir(parents=True)
    (ws / "README.md").write_text("JWT auth for a FastAPI app\n")
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(fleet_name, port, ws))
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text

        assert exec_text(path, env, "test-agent", "cat README.md") == "JWT auth for a FastAPI app\n"
        exec_text(path, env, "impl-agent", "echo 'def issue_token(): ...' > app/auth/tokens.py")
        assert exec_text(path, env, "test-agent", "cat app/auth/tokens.py") == "def issue_token(): ...\n"
        assert fleet("exec", "-f", str(path), "test-agent", "--", "sh", "-c", "exit 7", env=env).code == 7

        wait_for(lambda: got(path, env, "impl-agent", "impl") == ["Implement JWT authentication"], 60, "first message")
        assert fleet("message", "-f", str(path), "test-agent", "Focus on HTTP-level tests", env=env).code == 0
        wait_for(lambda: got(path, env, "test-agent", "test")[-1:] == ["Focus on HTTP-level tests"], 60, "message")

        exec_text(path, env, "impl-agent", "mkdir -p /srv && echo impl-web > /srv/index.html && "
                  "(nohup python3 -m http.server 3000 --directory /srv >/dev/null 2>&1 &)")
        url = f"https://web.impl-agent.localhost:{port}/"
        wait_for(lambda: curl(url, fleet_home) == (200, "impl-web"), 90, url)

        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text

        before = exec_text(path, env, "impl-agent", "cat /run/fleet/impl-agent/pid")
        path.write_text(fleet_yaml(fleet_name, port, ws, test_env="env: {TZ: Europe/Paris}"))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "replace  agent test-agent" in r.out, r.text
        assert exec_text(path, env, "impl-agent", "cat /run/fleet/impl-agent/pid") == before

        r = fleet("pull", "-f", str(path), "impl-agent", str(tmp_path / "pulled"), env=env)
        assert r.code == 0 and (tmp_path / "pulled" / "app" / "auth" / "tokens.py").exists(), r.text

        path.write_text(fleet_yaml(fleet_name, port, ws, agents=False))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "destroy  host auth-host" in r.out, r.text
        m = re.search(r"snapshot (im-[A-Za-z0-9]+)", r.out)
        assert m, r.out

        path.write_text(fleet_yaml(fleet_name, port, ws))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and f"started from snapshot {m.group(1)}" in r.out, r.text
        assert exec_text(path, env, "test-agent", "cat app/auth/tokens.py") == "def issue_token(): ...\n"
    finally:
        fleet("destroy", "-f", str(path), "--yes", env=env)
