"""`fleet stop/start`, exec with a string and `fleet ls` for agents on a Modal
host, through the real modal SDK against the fake control plane."""

from __future__ import annotations

import json

import pytest

from tests.conftest import free_port
from tests.modal.helpers import exec_text, fleet, fleet_yaml, terminate_fleet

pytestmark = pytest.mark.docker


def test_stop_apply_start_exec_and_ls_on_modal(fake_modal, fleet_name, tmp_path):
    env = fake_modal.env()
    ws = tmp_path / "ws"
    ws.mkdir()
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(fleet_name, free_port(), ws, restore=False))
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text

        r = fleet("stop", "-f", str(path), "test-agent", env=env)
        assert r.code == 0 and "stopped agent test-agent" in r.out, r.text
        assert exec_text(path, env, "impl-agent", "cat /run/fleet/test-agent/status").split()[0] == "stopped"
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out and "stopped by `fleet stop`" in r.out, r.text
        r = fleet("status", "-f", str(path), "-o", "json", env=env)
        held = {a["agent"]: a["stopped_by_user"] for a in json.loads(r.out)["agents"]}
        assert held == {"impl-agent": False, "test-agent": True}, held
        assert "stopped (fleet stop)" in fleet("status", "-f", str(path), env=env).out
        r = fleet("message", "-f", str(path), "test-agent", "hello", env=env)
        assert r.code == 1 and "fleet start test-agent" in r.err, r.text

        r = fleet("start", "-f", str(path), "test-agent", env=env)
        assert r.code == 0 and "started agent test-agent" in r.out, r.text
        r = fleet("apply", "-f", str(path), env=env)
        assert "up to date" in r.out and "fleet stop" not in r.out, r.text

        # a string runs through /bin/sh -c, in the agent's environment
        r = fleet("exec", "-f", str(path), "test-agent", "echo $FLEET_AGENT && exit 4", env=env)
        assert r.code == 4 and r.out.strip() == "test-agent", r.text

        r = fleet("ls", "-o", "json", env=env)
        mine = next(f for f in json.loads(r.out)["fleets"] if f["fleet"] == fleet_name)
        assert mine["providers"] == ["modal"] and mine["agents"] == 2 and mine["running"] == 2, mine
    finally:
        terminate_fleet(fake_modal, fleet_name)
