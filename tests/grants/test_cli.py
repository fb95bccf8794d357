"""`fleet grant set|list|rm` and `fleet logs --network` through the real CLI."""

from __future__ import annotations

import json
import os
import stat

import pytest

from reconciler.grants import netlog
from tests.conftest import run_fleet

SECRET = "ghp_CLItoken_0123456789"


@pytest.fixture(autouse=True)
def no_keyring(monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")


def test_set_list_rm(fleet_home):
    r = run_fleet("grant", "set", "github", input=SECRET + "\n")
    assert r.code == 0, r.text
    assert "grant github stored" in r.out and SECRET not in r.text
    r = run_fleet("grant", "list", "-o", "json")
    assert r.code == 0, r.text
    (row,) = json.loads(r.out)["grants"]
    assert row["name"] == "github" and row["source"] == "stdin" and "github.com" in row["hosts"]
    assert SECRET not in r.text
    r = run_fleet("grant", "list")
    assert "github" in r.out and "api.github.com" in r.out and SECRET not in r.text
    assert stat.S_IMODE(os.stat(fleet_home / "credentials" / "github.json").st_mode) == 0o600
    assert SECRET.encode() not in (fleet_home / "credentials" / "github.json").read_bytes()
    r = run_fleet("grant", "rm", "github")
    assert r.code == 0 and "removed" in r.out
    r = run_fleet("grant", "rm", "github")
    assert r.code == 1 and "not stored" in r.err


def test_set_refuses_empty_input_and_bad_names(fleet_home):
    r = run_fleet("grant", "set", "github", input="")
    assert r.code == 1 and "empty" in r.err and "Traceback" not in r.text
    r = run_fleet("grant", "set", "../etc", input=SECRET)
    assert r.code == 1 and "DNS label" in r.err
    assert not (fleet_home / "credentials" / "github.json").exists()


def test_from_gh_takes_the_gh_token(fleet_home, tmp_path):
    # gh is not installed on this machine: a stand-in with gh's interface
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gh = bindir / "gh"
    gh.write_text(f'#!/bin/sh\n[ "$1 $2" = "auth token" ] && echo {SECRET}-gh\n')
    gh.chmod(0o755)
    r = run_fleet("grant", "set", "github", "--from-gh", env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.code == 0, r.text
    r = run_fleet("grant", "list", "-o", "json")
    assert json.loads(r.out)["grants"][0]["source"] == "gh"
    r = run_fleet("grant", "set", "github", "--from-gh", env={"PATH": str(tmp_path / "nothing")})
    assert r.code == 1 and "gh" in r.err


def test_user_defined_grant_hosts_are_listed_from_fleet_yaml(fleet_home, tmp_path):
    (tmp_path / "fleet.yaml").write_text(
        "fleet: f\ngrants:\n  internal:\n    hosts: [api.internal.example]\n    header: X-Key\n    value: '{token}'\n"
        "agents:\n  a: {image: x, grants: [internal]}\n"
    )
    assert run_fleet("grant", "set", "internal", input="s3cret", cwd=tmp_path).code == 0
    r = run_fleet("grant", "list", "-o", "json", cwd=tmp_path)
    assert json.loads(r.out)["grants"][0]["hosts"] == ["api.internal.example"]


def test_logs_network_prints_the_agent_requests(fleet_home, tmp_path):
    (tmp_path / "fleet.yaml").write_text("fleet: f\nagents:\n  a: {image: x, grants: [github]}\n  b: {image: x}\n")
    netlog.record("f", "a", method="GET", host="api.github.com", port=443, path="/user?token=zzz", status=200,
                  grant="github", mode="intercept")
    r = run_fleet("logs", "a", "--network", cwd=tmp_path)
    assert r.code == 0, r.text
    assert "GET" in r.out and "api.github.com/user" in r.out and "github" in r.out and "zzz" not in r.out
    r = run_fleet("logs", "nope", "--network", cwd=tmp_path)
    assert r.code == 1 and "no agent 'nope'" in r.err
