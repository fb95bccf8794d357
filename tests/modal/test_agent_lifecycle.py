"""Agents on a Modal host keep Docker's lifecycle: restart policies (kept by the
supervisor in the sandbox), enabled: false stops one agent and leaves its
neighbour, attach/detach on a real terminal, status with restarts; the host image
built from a Dockerfile (`build:`)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import Terminal, free_port
from tests.modal.helpers import READER, exec_text, fleet, got, sandboxes, terminate_fleet, wait_for

pytestmark = pytest.mark.docker


def lifecycle_yaml(name: str, ctx, port: int, reader_enabled: bool = True) -> str:
    crasher = "read x; echo bye; exit 3"
    return textwrap.dedent(f"""
        fleet: {name}
        proxy: {{port: {port}}}
        hosts:
          box:
            provider: modal
            build: {{context: {ctx}}}
        agents:
          reader:
            host: box
            command: {json.dumps(READER.format(name="reader"))}
            enabled: {str(reader_enabled).lower()}
          crasher:
            host: box
            command: {json.dumps(crasher)}
            restart: on-failure
          once:
            host: box
            command: "exit 5"
            restart: never
        """)


def supervisor_status(path, env, agent: str) -> list[str]:
    return exec_text(path, env, "crasher", f"cat /run/fleet/{agent}/status").split()


def test_restart_policies_enabled_attach_and_build(fake_modal, fleet_name, tmp_path):
    env = fake_modal.env()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm\nRUN echo built-by-modal > /built.txt\n")
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(lifecycle_yaml(fleet_name, ctx, port))
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert exec_text(path, env, "reader", "cat /built.txt") == "built-by-modal\n"

        # restart: on-failure -> restarted by the supervisor after exit 3; never -> stays exited
        assert fleet("message", "-f", str(path), "crasher", "boom", env=env).code == 0
        wait_for(lambda: supervisor_status(path, env, "crasher")[:3] == ["running", "1", "3"], what="crasher restarted")
        wait_for(lambda: supervisor_status(path, env, "once")[:3] == ["exited", "0", "5"], what="once exited for good")
        r = fleet("message", "-f", str(path), "once", "hello?", env=env)
        assert r.code == 1 and "is not running (exited, exit code 5)" in r.err, r.text
        r = fleet("status", "-f", str(path), "--output", "json", env=env)
        assert r.code == 0, r.text
        rows = {a["agent"]: a for a in json.loads(r.out)["agents"]}
        assert rows["crasher"]["restarts"] == 1 and rows["crasher"]["provider"] == "modal", rows["crasher"]

        # attach on a real terminal: typed input reaches the agent; ctrl-p ctrl-q detaches
        with Terminal("attach", "-f", str(path), "reader", env=env) as term:
            assert b"reader ready" in term.read_until(b"reader ready")
            term.write(b"typed at the terminal\r")
            assert b"reader got: typed at the terminal" in term.read_until(b"reader got: typed at the terminal")
            term.write(b"\x10\x11")
            assert b"detached from reader" in term.read_until(b"detached from reader")
            assert term.exit_code() == 0
        assert got(path, env, "reader", "reader") == ["typed at the terminal"]
        attach_left = exec_text(path, env, "crasher", "ps -eo args | grep -c '^tail -n ' || true")
        assert attach_left.strip() == "0", attach_left

        # enabled: false stops only that agent; enabled again starts it
        crasher_pid = exec_text(path, env, "crasher", "cat /run/fleet/crasher/pid")
        path.write_text(lifecycle_yaml(fleet_name, ctx, port, reader_enabled=False))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "stop     agent reader" in r.out, r.text
        assert supervisor_status(path, env, "reader")[0] == "stopped"
        r = fleet("message", "-f", str(path), "reader", "anyone?", env=env)
        assert r.code == 1, r.text
        assert exec_text(path, env, "crasher", "cat /run/fleet/crasher/pid") == crasher_pid
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text
        path.write_text(lifecycle_yaml(fleet_name, ctx, port))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "start    agent reader" in r.out, r.text
        assert fleet("message", "-f", str(path), "reader", "back again", env=env).code == 0
        wait_for(lambda: got(path, env, "reader", "reader")[-1:] == ["back again"], what="message after start")
        assert len(sandboxes(fake_modal, fleet_name)) == 1

        r = fleet("destroy", "-f", str(path), "--yes", env=env)
        assert r.code == 0 and "snapshot im-" in r.out, r.text
        assert sandboxes(fake_modal, fleet_name) == []
    finally:
        terminate_fleet(fake_modal, fleet_name)
