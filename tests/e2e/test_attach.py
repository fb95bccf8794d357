"""`fleet attach` on a real terminal against the real engine: it starts with the
agent's recent output, says truthfully what became of an agent that ended while
attached (and exits with its code, as `docker attach` does), and takes
`--detach-keys` like `docker attach`, refusing a bad one clearly."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Terminal, run_fleet, wait_for
from tests.e2e.test_docker_apply import containers, write

pytestmark = pytest.mark.docker

READER = 'echo "earlier output: ready"; while read line; do echo "got: $line"; done'


def fleet_file(tmp_path, name: str, image: str, restart: str):
    return write(
        tmp_path,
        f"""
        fleet: {name}
        defaults: {{image: {image}}}
        agents:
          reader: {{command: '{READER}', restart: {restart}}}
        """,
    )


def test_attach_replays_recent_output_and_custom_detach_keys_leave_it_running(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "always")
    assert run_fleet("apply", str(path)).code == 0
    wait_for(lambda: b"earlier output" in containers(docker_client, fleet_name)["agent:reader"].logs(), what="agent output")
    with Terminal("attach", "-f", str(path), "--detach-keys", "ctrl-x,q", "reader") as term:
        seen = term.read_until(b"earlier output: ready")
        assert b"attached to reader (detach: ctrl-x,q)" in seen and b"earlier output: ready" in seen, seen
        time.sleep(0.3)
        term.write(b"typed\r")
        term.read_until(b"got: typed")
        term.write(b"\x10\x11")  # the default keys are just keys now: they reach the agent
        term.write(b"\x18q")  # ctrl-x q
        seen = term.read_until(b"keeps running")
        assert b"detached from reader; it keeps running" in seen, seen
        assert term.exit_code() == 0
    assert containers(docker_client, fleet_name)["agent:reader"].status == "running"


@pytest.mark.parametrize("restart", ["never", "always"])
def test_ctrl_c_that_ends_the_agent_is_reported_truthfully(tmp_path, docker_client, base_image, fleet_name, restart):
    path = fleet_file(tmp_path, fleet_name, base_image, restart)
    assert run_fleet("apply", str(path)).code == 0
    before = containers(docker_client, fleet_name)["agent:reader"]
    with Terminal("attach", "-f", str(path), "reader") as term:
        term.read_until(b"earlier output: ready")
        time.sleep(0.3)
        term.write(b"\x03")  # Ctrl-C reaches the agent's terminal: SIGINT ends the read loop
        seen = term.read_until(b"exit code", timeout=30)
        seen = term.read_until(b"(restart: " + restart.encode() + b")", timeout=10)
        code = term.exit_code()
    assert b"it keeps running" not in seen, seen
    assert b"reader exited (exit code 130)" in seen, seen
    assert code == 130
    c = containers(docker_client, fleet_name)["agent:reader"]
    assert c.id == before.id
    if restart == "never":
        assert c.status == "exited" and b"it is not running (restart: never)" in seen, seen
    else:
        assert b"was restarted (restart: always); it is running again" in seen, seen
        wait_for(lambda: containers(docker_client, fleet_name)["agent:reader"].status == "running", what="restart")


def test_bad_detach_keys_are_refused_clearly(tmp_path):
    for bad, shown in (("meta-x", "'meta-x'"), ("ctrl-p,", "''"), ("", "empty")):
        r = run_fleet("attach", "-f", str(tmp_path / "nowhere.yaml"), "--detach-keys", bad, "reader")
        assert r.code == 1 and "--detach-keys" in r.err and shown in r.err, r.text
        assert "Traceback" not in r.text and len(r.err.strip().splitlines()) == 1, r.err
