"""`fleet status` on the real engine, with a shared host and long names: piped
output is every cell in full, one line per agent (grep finds the host), at any
COLUMNS; an 80-column terminal drops low-value columns but never cuts a URL;
`-o json` holds data (null, plain states, booleans), not display strings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import Terminal, free_port, run_fleet
from tests.e2e.test_docker_apply import write

pytestmark = pytest.mark.docker

HOST = "auth-host-shared-by-the-implementation-and-test-agents"
IMPL = "impl-agent-implementing-jwt-authentication"


def piped(*args: str, columns: str | None) -> str:
    """The real CLI with stdout a pipe, COLUMNS as given (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["NO_COLOR"] = "1"
    if columns is not None:
        env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-m", "reconciler", *args], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_status_is_never_truncated_and_json_is_data(tmp_path, docker_client, base_image, fleet_name):
    port = free_port()
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {port}}}
        defaults: {{image: {base_image}}}
        hosts:
          {HOST}: {{}}
        agents:
          {IMPL}:
            host: {HOST}
            command: [sleep, infinity]
            ports: {{web: 3000}}
          test-agent:
            host: {HOST}
            command: [sleep, infinity]
          solo:
            command: 'cat > /dev/null'
            message: "hello"
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    url = f"https://web.{IMPL}.localhost:{port}"

    # piped, with COLUMNS unset and at 80: full cells, one line per agent, grep-able
    for columns in (None, "80"):
        out = piped("status", str(path), columns=columns)
        assert "…" not in out and "..." not in out, out
        lines = out.splitlines()
        assert lines[0].split() == ["AGENT", "HOST", "PROVIDER", "STATE", "UP", "RESTARTS", "MESSAGE", "PORTS", "URLS", "AGE"]
        on_host = [ln for ln in lines if HOST in ln]  # `fleet status | grep auth-host`
        assert [ln.split()[0] for ln in on_host] == [IMPL, "test-agent"], out
        impl_line = on_host[0]
        assert url in impl_line.split() and re.search(r"web 3000->[0-9.]+:3000", impl_line), impl_line  # the holder's bridge address
        assert [ln.split()[:4] for ln in lines if ln.startswith("solo ")] == [["solo", "(private)", "docker", "running"]]

    # a real terminal of 80 columns: low-value columns dropped, the URL whole on the agent's line
    with Terminal("status", str(path), env={"COLUMNS": ""}, size=(24, 80)) as term:
        term.read_until(b"test-agent", timeout=60)
        assert term.exit_code() == 0
        shown = re.sub(r"\x1b\[[0-9;]*m", "", term.read_until(b"\0", timeout=1).decode().replace("\r\n", "\n"))
    assert "…" not in shown and shown.splitlines()[0].split() == ["AGENT", "STATE", "URLS"], shown
    [impl_line] = [ln for ln in shown.splitlines() if ln.startswith(IMPL)]
    assert impl_line.split() == [IMPL, "running", url], shown
    assert all(len(ln) <= 80 for ln in shown.splitlines() if not ln.startswith(IMPL)), shown

    # JSON: data, not display strings
    doc = json.loads(run_fleet("status", str(path), "-o", "json").out)
    assert doc["format_version"] == 2 and doc["kind"] == "fleet-status" and doc["fleet"] == fleet_name
    rows = {row["agent"]: row for row in doc["agents"]}
    assert rows["solo"]["host"] is None and rows[IMPL]["host"] == HOST
    assert rows["test-agent"]["message"] is None
    assert rows["solo"]["message"] in ("pending", "delivered")
    for row in rows.values():
        assert (row["state"], row["outdated"], row["in_file"], row["enabled"]) == ("running", False, True, True), row
    assert rows[IMPL]["urls"] == {"web": url}

    # the file changes: an outdated agent and one no longer in the file, as booleans
    text = path.read_text().replace("message: \"hello\"", "message: \"hello\"\n    env: {V: '2'}")
    path.write_text(text.replace("  test-agent:\n    host: " + HOST + "\n    command: [sleep, infinity]\n", ""))
    doc = json.loads(run_fleet("status", str(path), "-o", "json").out)
    rows = {row["agent"]: row for row in doc["agents"]}
    assert (rows["solo"]["state"], rows["solo"]["outdated"]) == ("running", True), rows["solo"]
    assert (rows["test-agent"]["state"], rows["test-agent"]["in_file"]) == ("running", False), rows["test-agent"]
    out = piped("status", str(path), columns=None)
    assert "running (outdated)" in out and "running (not in fleet.yaml)" in out, out
