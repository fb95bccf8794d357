"""`fleet attach` to an agent on a Modal host (fake control plane, real
containers) on a real terminal: recent output first, custom detach keys, and an
agent ended by Ctrl-C reported as exited (code, restarted or not), never as
"it keeps running"."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from tests.conftest import Terminal, free_port
from tests.modal.helpers import fleet, terminate_fleet

pytestmark = pytest.mark.docker

READER = 'echo "earlier output: ready"; while read line; do echo "got: $line"; done'
ONCE = 'echo "earlier output: ready"; read line; echo "bye"; exit 3'


def test_attach_on_modal_replays_detaches_and_reports_an_ended_agent(fake_modal, fleet_name, tmp_path):
    env = fake_modal.env()
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        hosts:
          box: {{provider: modal, image: "python:3.12-slim"}}
        agents:
          once: {{host: box, command: {json.dumps(ONCE)}, restart: never}}
          again: {{host: box, command: {json.dumps(READER)}, restart: always}}
        """))
    run_env = {**env, "COLUMNS": ""}
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text

        with Terminal("attach", "-f", str(path), "--detach-keys", "ctrl-x,q", "again", env=run_env) as term:
            seen = term.read_until(b"earlier output: ready")
            assert b"earlier output: ready" in seen, seen
            time.sleep(0.5)
            term.write(b"typed\r")
            term.read_until(b"got: typed")
            term.write(b"\x18q")
            seen = term.read_until(b"keeps running")
            assert b"detached from again; it keeps running" in seen, seen
            assert term.exit_code() == 0

        # Ctrl-C ends the read loop (SIGINT, as on Docker); the supervisor restarts it
        with Terminal("attach", "-f", str(path), "again", env=run_env) as term:
            term.read_until(b"earlier output: ready")
            time.sleep(0.5)
            term.write(b"\x03")
            seen = term.read_until(b"running again", timeout=30)
            assert b"it keeps running" not in seen, seen
            assert b"again exited (exit code 130) and was restarted (restart: always); it is running again" in seen, seen
            assert term.exit_code() == 130

        # an agent that finishes while attached (restart: never)
        with Terminal("attach", "-f", str(path), "once", env=run_env) as term:
            term.read_until(b"earlier output: ready")
            time.sleep(0.5)
            term.write(b"done\r")
            seen = term.read_until(b"(restart: never)", timeout=30)
            assert b"bye" in seen and b"once exited (exit code 3); it is not running (restart: never)" in seen, seen
            assert term.exit_code() == 3
    finally:
        terminate_fleet(fake_modal, fleet_name)
