"""Containers changed by hand, and an apply racing a destroy.

(A hand-stopped agent and two applies at once are in tests/e2e/test_docker_apply.py.)

Renamed: ownership is the labels and the name fleet gave, since labels can be
copied. An agent container renamed with `docker rename` is no longer the agent:
it is reported and never touched, and fleet makes the agent again.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_fleet

from .helpers import assert_converged, assert_noop, by_agent, fleet_file, start_fleet

pytestmark = pytest.mark.docker

N = 4
AGENTS = {f"a{i}" for i in range(N)}


def test_removed_agent_comes_back_and_nothing_else_moves(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N)
    assert run_fleet("apply", "--yes", str(path)).code == 0
    before = assert_converged(docker_client, fleet_name, AGENTS)
    docker_client.api.remove_container(before["a1"].id, force=True)
    r = run_fleet("diff", str(path))
    assert r.code == 0 and "create" in r.out and "a1" in r.out and "no container" in r.out, r.text
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    after = assert_converged(docker_client, fleet_name, AGENTS)
    assert after["a1"].id != before["a1"].id and after["a1"].name == f"fleet_{fleet_name}_a1"
    assert {a: c.id for a, c in after.items() if a != "a1"} == {a: c.id for a, c in before.items() if a != "a1"}
    assert_noop(path)


def test_renamed_agent_is_no_longer_the_agent(tmp_path, docker_client, base_image, fleet_name):
    """Ownership is labels and the name fleet gave (labels alone can be copied):
    a container renamed by hand is reported and left alone, fleet makes the
    agent again under its name, and destroy does not remove the renamed one."""
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N)
    assert run_fleet("apply", "--yes", str(path)).code == 0
    before = assert_converged(docker_client, fleet_name, AGENTS)
    renamed = f"{fleet_name}-renamed-by-hand"
    docker_client.api.rename(before["a1"].id, renamed)
    try:
        r = run_fleet("apply", "--yes", str(path))
        assert r.code == 0 and f"warning: container {renamed} ({before['a1'].id[:12]}) carries fleet {fleet_name}'s labels" in r.out, r.text
        assert "create   agent a1  no container" in r.out, r.out
        a1 = docker_client.containers.get(f"fleet_{fleet_name}_a1")
        assert a1.id != before["a1"].id and docker_client.containers.get(renamed).status == "running"
        r = run_fleet("destroy", "--yes", str(path))
        assert r.code == 0, r.text
        assert docker_client.containers.get(renamed).status == "running"  # not fleet's any more: untouched
        assert not docker_client.containers.list(all=True, filters={"name": f"^/fleet_{fleet_name}_"})
    finally:
        docker_client.api.remove_container(before["a1"].id, force=True)


@pytest.mark.parametrize("first", ["destroy", "apply"])
def test_apply_while_destroy_runs_ends_consistent_and_converges(tmp_path, docker_client, base_image, fleet_name, first):
    """Both commands take the fleet's lock: whichever comes second waits, then
    reads fresh state. The end is one of the two whole states, never a mix."""
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N)
    if first == "destroy":
        assert run_fleet("apply", "--yes", str(path)).code == 0
    cmds = [("destroy", "--yes"), ("apply", "--yes")]
    if first == "apply":
        cmds.reverse()
    procs = []
    for cmd in cmds:
        procs.append(start_fleet(*cmd, str(path)))
        time.sleep(0.3)  # the order only matters for who takes the lock first; both outcomes are checked
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Traceback" in o for o in outs), outs
    found = by_agent(docker_client, fleet_name)
    if found:  # the apply ran last
        assert_converged(docker_client, fleet_name, AGENTS, f"{first} first")
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    assert_converged(docker_client, fleet_name, AGENTS, "after")
    assert_noop(path)
