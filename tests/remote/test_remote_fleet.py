"""`engine:` end to end on the real thing: a shared host with two agents on the
remote engine (a second dockerd behind sshd, tests/remote/conftest.py) and one
local agent, through the real CLI.

They run where declared (and carry the engine's label there), the agents of the
remote host share its /workspace, a no-op apply is up to date, status and ls
name the engine; with the remote's sshd stopped the remote agents are "unknown",
a local edit still converges and nothing on either engine is touched; destroy
cleans both engines.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import cleanup_fleet, run_fleet
from tests.remote.helpers import sshd_pid

pytestmark = pytest.mark.docker


def _write(path, fleet: str, engine: str, local_command: str = "sleep infinity") -> None:
    path.write_text(f"""fleet: {fleet}
hosts:
  big-box:
    engine: {engine}
    image: fleet-base:bookworm
agents:
  impl:
    host: big-box
    command: sleep infinity
  review:
    host: big-box
    command: sleep infinity
  here:
    image: fleet-base:bookworm
    command: {local_command}
""")


def _ids(client, fleet: str) -> dict[str, str]:
    return {c.name: c.id for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})}


@dataclass
class Mixed:
    """The fleet of these tests written out: its engine, the remote engine's own client
    (`far`) and the fleet file; sshd is started again and both engines cleaned after."""

    engine: str
    far: object
    file: Path


@pytest.fixture
def mixed(tmp_path, fleet_name, docker_client, remote_engine):
    m = Mixed(f"ssh://{remote_engine.name}", remote_engine.docker(), tmp_path / "fleet.yaml")
    _write(m.file, fleet_name, m.engine)
    yield m
    if remote_engine.script("status", remote_engine.name).returncode != 0:
        remote_engine.script("up", remote_engine.name)
    cleanup_fleet(m.far, fleet_name)
    cleanup_fleet(docker_client, fleet_name)


def test_a_remote_shared_host_beside_a_local_agent(mixed, fleet_name, docker_client, remote_engine):
    engine, far, f = mixed.engine, mixed.far, mixed.file
    r = run_fleet("apply", "--yes", str(f))
    assert r.code == 0, r.text
    assert f"host big-box (on {engine})" in r.out
    # where they run: the host and its agents there, labelled for that engine; the local one here
    remote_names = _ids(far, fleet_name)
    assert set(remote_names) == {f"fleet_{fleet_name}_host_big-box", f"fleet_{fleet_name}_impl", f"fleet_{fleet_name}_review"}
    for c in far.containers.list(filters={"label": f"dev.fleet.project={fleet_name}"}):
        assert c.labels["dev.fleet.engine"] == engine and c.status == "running"
    assert set(_ids(docker_client, fleet_name)) == {f"fleet_{fleet_name}_here"}

    # the host's agents share its /workspace, over the engine's ssh connection
    r = run_fleet("exec", "-f", str(f), "impl", "--", "sh", "-c", "echo from-impl > /workspace/note")
    assert r.code == 0, r.text
    r = run_fleet("exec", "-f", str(f), "review", "--", "cat", "/workspace/note")
    assert r.code == 0 and r.out.strip() == "from-impl", r.text

    # a no-op apply is up to date; status and ls name the engine
    r = run_fleet("apply", "--yes", str(f))
    assert r.code == 0 and "is up to date" in r.out, r.text
    r = run_fleet("status", "-o", "json", str(f))
    rows = {a["agent"]: a for a in json.loads(r.out)["agents"]}
    assert rows["impl"]["engine"] == engine and rows["impl"]["state"] == "running"
    assert "engine" not in rows["here"]
    r = run_fleet("ls", "-o", "json")
    assert r.code == 0, r.text
    mine = [row for row in json.loads(r.out)["fleets"] if row["fleet"] == fleet_name]
    assert mine and f"docker@{engine}" in mine[0]["providers"]

    # the engine goes dark: its agents are unknown, the local edit converges, nothing is touched
    before_far, before_here = _ids(far, fleet_name), _ids(docker_client, fleet_name)
    subprocess.run(["kill", str(sshd_pid(remote_engine))], check=True)
    _write(f, fleet_name, engine, local_command="sleep 100000")
    r = run_fleet("apply", "--yes", str(f))
    assert r.code == 1, r.text  # the rest converged, but not everything is known to match: the exit code says so
    assert f"engine {engine} unreachable" in r.text and "agent impl" in r.text
    assert "destroy" not in r.out and "replace   host" not in r.out  # only the local agent is replaced
    after_here = _ids(docker_client, fleet_name)
    assert after_here[f"fleet_{fleet_name}_here"] != before_here[f"fleet_{fleet_name}_here"]  # replaced: converged
    r = run_fleet("status", str(f))
    assert "unknown" in r.out and f"engine {engine} did not answer" in r.out, r.text
    r = run_fleet("diff", "-o", "json", str(f))
    assert r.code == 0 and engine in json.loads(r.out)["unreachable"], r.text
    assert remote_engine.script("up", remote_engine.name).returncode == 0  # sshd back
    assert _ids(far, fleet_name) == before_far  # untouched while unreachable
    r = run_fleet("apply", "--yes", str(f))
    assert r.code == 0 and "is up to date" in r.out, r.text

    # destroy cleans both engines
    r = run_fleet("destroy", "--yes", str(f))
    assert r.code == 0, r.text
    assert _ids(far, fleet_name) == {} and _ids(docker_client, fleet_name) == {}


def test_two_fleets_on_one_remote_engine_never_touch_each_other(tmp_path, fleet_name, remote_engine):
    engine = f"ssh://{remote_engine.name}"
    far = remote_engine.docker()
    other = f"{fleet_name}-b"
    files = {}
    for name in (fleet_name, other):
        d = tmp_path / name
        d.mkdir()
        files[name] = d / "fleet.yaml"
        files[name].write_text(f"""fleet: {name}
agents:
  same-name:
    engine: {engine}
    image: fleet-base:bookworm
    command: sleep infinity
""")
    try:
        for name in (fleet_name, other):
            r = run_fleet("apply", "--yes", str(files[name]))
            assert r.code == 0, r.text
        kept = _ids(far, other)
        assert len(kept) == 1
        r = run_fleet("destroy", "--yes", str(files[fleet_name]))
        assert r.code == 0, r.text
        assert _ids(far, fleet_name) == {} and _ids(far, other) == kept
        r = run_fleet("apply", "--yes", str(files[other]))
        assert r.code == 0 and "is up to date" in r.out, r.text
    finally:
        cleanup_fleet(far, fleet_name)
        cleanup_fleet(far, other)


def test_destroy_with_an_unreachable_engine_removes_what_it_can_and_says_the_rest(mixed, fleet_name, docker_client,
                                                                                 remote_engine):
    engine, far, f = mixed.engine, mixed.far, mixed.file
    r = run_fleet("apply", "--yes", str(f))
    assert r.code == 0, r.text
    remote_before = _ids(far, fleet_name)
    subprocess.run(["kill", str(sshd_pid(remote_engine))], check=True)
    r = run_fleet("destroy", "--yes", str(f))
    assert r.code == 1, r.text  # not everything is gone: the exit code says so
    assert f"engine {engine} unreachable" in r.text and "run `fleet destroy` again" in r.text
    assert _ids(docker_client, fleet_name) == {}  # the local agent went
    assert remote_engine.script("up", remote_engine.name).returncode == 0
    assert _ids(far, fleet_name) == remote_before  # untouched while unknown
    r = run_fleet("destroy", "--yes", str(f))
    assert r.code == 0, r.text
    assert _ids(far, fleet_name) == {}
