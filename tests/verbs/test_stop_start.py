"""`fleet stop`, `fleet start`, `fleet restart` on the real engine: a stop keeps
the container and is remembered, apply leaves the agent stopped and says so in
the plan and in status, until `fleet start` or a change to its spec."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet, wait_for
from tests.e2e.test_docker_apply import containers, write

pytestmark = pytest.mark.docker


def fleet_file(tmp_path, name: str, image: str, tz: str = "UTC"):
    return write(
        tmp_path,
        f"""
        fleet: {name}
        defaults: {{image: {image}, env: {{TZ: {tz}}}}}
        hosts:
          box: {{}}
        agents:
          solo: {{command: ["sleep", "infinity"]}}
          impl: {{host: box, command: ["sleep", "infinity"]}}
          tests: {{host: box, command: ["sleep", "infinity"]}}
        """,
    )


def state(client, fleet: str, key: str) -> str:
    c = containers(client, fleet)[key]
    c.reload()
    return c.status


def status_of(path) -> dict[str, str]:
    """agent -> state as the table shows it (JSON holds data: the provider's
    state and `stopped_by_user`)."""
    r = run_fleet("status", "-o", "json", str(path))
    assert r.code == 0, r.text
    return {a["agent"]: "stopped (fleet stop)" if a["stopped_by_user"] else a["state"] for a in json.loads(r.out)["agents"]}


def test_stop_is_remembered_by_apply_until_start(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image)
    assert run_fleet("apply", str(path)).code == 0
    solo_id = containers(docker_client, fleet_name)["agent:solo"].id

    r = run_fleet("stop", "-f", str(path), "solo")
    assert r.code == 0, r.text
    assert "stopped agent solo" in r.out and "fleet start solo" in r.out, r.text
    assert state(docker_client, fleet_name, "agent:solo") == "exited"
    assert containers(docker_client, fleet_name)["agent:solo"].id == solo_id  # kept, not removed

    # apply leaves it stopped and says so; nothing is started
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert "up to date" in r.out and "stopped by `fleet stop`" in r.out, r.text
    assert state(docker_client, fleet_name, "agent:solo") == "exited"
    r = run_fleet("diff", "-o", "json", str(path))
    assert json.loads(r.out)["stopped"] == ["solo"] and json.loads(r.out)["in_sync"] is True
    assert status_of(path)["solo"] == "stopped (fleet stop)"
    rows = json.loads(run_fleet("status", "-o", "json", str(path)).out)["agents"]
    assert {r["agent"]: r["stopped_by_user"] for r in rows} == {"solo": True, "impl": False, "tests": False}
    assert {r["agent"]: r["state"] for r in rows}["solo"] == "exited"  # data: the provider's state
    r = run_fleet("status", str(path))
    assert "stopped (fleet stop)" in r.out, r.text

    # start runs the same container again; apply then has nothing to say about it
    r = run_fleet("start", "-f", str(path), "solo")
    assert r.code == 0 and "started agent solo" in r.out, r.text
    assert state(docker_client, fleet_name, "agent:solo") == "running"
    assert containers(docker_client, fleet_name)["agent:solo"].id == solo_id
    r = run_fleet("apply", str(path))
    assert "up to date" in r.out and "fleet stop" not in r.out, r.text
    assert status_of(path)["solo"] == "running"

    # restart keeps the container, starts it anew
    before = containers(docker_client, fleet_name)["agent:solo"].attrs["State"]["StartedAt"]
    r = run_fleet("restart", "-f", str(path), "solo")
    assert r.code == 0 and "restarted agent solo" in r.out, r.text
    after = containers(docker_client, fleet_name)["agent:solo"].attrs["State"]["StartedAt"]
    assert after != before and containers(docker_client, fleet_name)["agent:solo"].id == solo_id


def test_stop_all_keeps_the_holder_and_a_spec_change_runs_them_again(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image)
    assert run_fleet("apply", str(path)).code == 0
    holder = containers(docker_client, fleet_name)["host:box"]

    r = run_fleet("stop", "--all", "-f", str(path))
    assert r.code == 0, r.text
    for key in ("agent:solo", "agent:impl", "agent:tests"):
        assert state(docker_client, fleet_name, key) == "exited", key
    assert state(docker_client, fleet_name, "host:box") == "running"  # the holder stays
    assert containers(docker_client, fleet_name)["host:box"].id == holder.id

    # a second stop has nothing to do and says so
    r = run_fleet("stop", "-f", str(path), "impl")
    assert r.code == 0 and "already stopped" in r.out, r.text

    r = run_fleet("apply", str(path))
    assert r.code == 0 and "up to date" in r.out, r.text
    assert r.out.count("stopped by `fleet stop`") == 3, r.text

    # a change to the spec (env.TZ, in every agent) runs them again
    path.write_text(path.read_text().replace("TZ: UTC", "TZ: Europe/Paris"))
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and "replace" in r.out, r.text
    for key in ("agent:solo", "agent:impl", "agent:tests"):
        assert state(docker_client, fleet_name, key) == "running", key
    r = run_fleet("apply", str(path))
    assert "up to date" in r.out and "fleet stop" not in r.out, r.text


def test_verbs_refuse_unknown_and_disabled_agents(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          web: {{command: ["sleep", "infinity"]}}
          off: {{command: ["sleep", "infinity"], enabled: false}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    r = run_fleet("stop", "-f", str(path), "wbe")
    assert r.code == 1 and "no agent 'wbe'" in r.err and "did you mean 'web'" in r.err, r.text
    r = run_fleet("start", "-f", str(path), "off")
    assert r.code == 1 and "disabled (enabled: false in fleet.yaml)" in r.err, r.text
    r = run_fleet("stop", "-f", str(path))
    assert r.code == 1 and "--all" in r.err, r.text
    assert state(docker_client, fleet_name, "agent:web") == "running"
