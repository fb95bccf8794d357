"""Pure pieces of the Modal provider: tag values, the supervisor's status lines,
detach keys, environment scripts (no Docker, no fake)."""

from __future__ import annotations

import re
import subprocess

import pytest

from reconciler.core.errors import FleetError
from reconciler.providers.modal import sh
from reconciler.providers.modal.driver import agent_tag, detach_sequence, parse_agent_tag


def test_agent_tags_hold_the_whole_hash_within_modal_limits():
    h = "ab" * 32
    value = agent_tag(h, "t1x2y3zz", "rm")
    assert len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9._-]+", value)
    assert parse_agent_tag(value) == (h, "t1x2y3zz", "rm")
    assert parse_agent_tag("garbage") == ("", "", "")
    assert parse_agent_tag("not*base64.x.r")[0] == ""


def test_status_lines():
    table = sh.parse_status("a 1 running 2 3 1700000000\nb 0 exited 0 5 1700000001\nshort line\n")
    assert table["a"] == {"state": "running", "running": True, "restarts": 2, "exit_code": 3, "since": 1700000000}
    assert table["b"]["running"] is False and table["b"]["exit_code"] == 5
    assert sh.parse_status("c 1 running 0 - 17")["c"]["exit_code"] is None
    assert "short" not in sh.parse_status("short line")


def test_detach_keys():
    assert detach_sequence("ctrl-p,ctrl-q") == b"\x10\x11"
    assert detach_sequence("ctrl-a,x") == b"\x01x"
    with pytest.raises(FleetError):
        detach_sequence("meta-x")


def test_exec_env_script_quotes_values_and_refuses_bad_names():
    script = sh.in_agent_env({"A": "it's $HOME"})
    out = subprocess.run(["sh", "-c", script, "fleet-exec", "nobody", "sh", "-c", 'printf %s "$A"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == "it's $HOME"
    with pytest.raises(FleetError):
        sh.in_agent_env({"BAD-NAME": "x"})


def test_prepare_script_is_valid_sh_and_quotes_the_command():
    script = sh.prepare("a", ("sh", "-c", "echo 'x'; exit 3"), "on-failure", {"K": "v\nw"})
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert "FLEET_RESTART=on-failure" in script
