"""On a Modal host (the fake control plane, real containers), first messages reach
the agent's terminal through the supervisor as exactly their text: a folded
message with no fold markers, a multi-line one line by line; read back inside
the sandbox."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import free_port
from tests.e2e.test_message_bytes import FOLDED, LINES
from tests.modal.helpers import fleet, terminate_fleet, wait_for

pytestmark = pytest.mark.docker


def read_back(path, env, agent: str) -> bytes:
    r = fleet("exec", "-f", str(path), agent, "--", "sh", "-c", f"cat /tmp/got-{agent} 2>/dev/null || true", env=env)
    return r.out.encode() if r.code == 0 else b""


def test_folded_and_multiline_messages_arrive_exactly_on_modal(fake_modal, fleet_name, tmp_path):
    env = fake_modal.env()
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        hosts:
          box: {{provider: modal, image: "python:3.12-slim"}}
        agents:
          folded:
            host: box
            command: 'cat > /tmp/got-folded'
            message: >-
              Implement JWT authentication for this FastAPI app. Start with the user model
              in app/models/, then the auth middleware in app/auth/.
          lines:
            host: box
            command: 'cat > /tmp/got-lines'
            message: |
              first line
                indented second line

              after a blank line
        """))
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        wait_for(lambda: read_back(path, env, "folded") == FOLDED.encode() + b"\n", what="folded message")
        wait_for(lambda: read_back(path, env, "lines") == LINES.encode() + b"\n", what="multi-line message")
        r = fleet("logs", "-f", str(path), "folded", env=env)
        assert r.code == 0 and "\x07" not in r.out, r.out
    finally:
        terminate_fleet(fake_modal, fleet_name)
