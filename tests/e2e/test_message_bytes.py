"""A first message and `fleet message` reach the agent's terminal as exactly their
text: a folded (`>-`) message arrives as one line with no fold markers, a
multi-line one line by line, and the bytes typed are the text's own (newlines
as LF, one CR for Enter at the end), read back inside real containers."""

from __future__ import annotations

import pytest

from tests.conftest import run_fleet, wait_for
from tests.e2e.test_docker_apply import containers, write

pytestmark = pytest.mark.docker

FOLDED = ("Implement JWT authentication for this FastAPI app. Start with the user model "
          "in app/models/, then the auth middleware in app/auth/.")
LINES = "first line\n  indented second line\n\nafter a blank line"
# reads its terminal raw (no line discipline): the exact bytes typed, up to Enter (CR)
RAW_READER = (
    "import os, sys, time, tty\n"
    "tty.setraw(0)\n"
    "print('raw-ready', flush=True)\n"
    "b = b''\n"
    "while not b.endswith(b'\\r'):\n"
    "    b += os.read(0, 4096)\n"
    "open('/tmp/got', 'wb').write(b)\n"
    "time.sleep(100000)\n"
)


def read_back(client, fleet: str, agent: str) -> bytes:
    code, out = containers(client, fleet)[f"agent:{agent}"].exec_run(["cat", "/tmp/got"])
    return out if code == 0 else b""


def test_folded_and_multiline_messages_arrive_exactly(tmp_path, docker_client, base_image, fleet_name):
    import json

    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          folded:
            command: 'cat > /tmp/got'
            message: >-
              Implement JWT authentication for this FastAPI app. Start with the user model
              in app/models/, then the auth middleware in app/auth/.
          lines:
            command: 'cat > /tmp/got'
            message: |
              first line
                indented second line

              after a blank line
          raw:
            command: {json.dumps(["python3", "-c", RAW_READER])}
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    # a line-reading program (terminal in its normal, cooked mode) gets the text and one line end
    wait_for(lambda: read_back(docker_client, fleet_name, "folded") == FOLDED.encode() + b"\n", what="folded message")
    wait_for(lambda: read_back(docker_client, fleet_name, "lines") == LINES.encode() + b"\n", what="multi-line message")
    assert b"\x07" not in containers(docker_client, fleet_name)["agent:folded"].logs()

    # a raw-mode program (a TUI) sees exactly what was typed: LF between lines, CR (Enter) at the end
    wait_for(lambda: b"raw-ready" in containers(docker_client, fleet_name)["agent:raw"].logs(), what="raw reader")
    r = run_fleet("message", "-f", str(path), "raw", "-", input=LINES + "\n")
    assert r.code == 0, r.text
    wait_for(lambda: read_back(docker_client, fleet_name, "raw") == LINES.encode() + b"\r", what="raw bytes")
