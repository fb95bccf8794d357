"""The host side effects as plan actions, on the real engine: a `build:` image
is an `image build` action the creates wait for (and none once it exists), a
copy workspace is a `workspace prepare` before its agent and a `workspace
release` after it, and `fleet destroy --purge-workspaces` lists and carries out
a `volume purge` for a shared host's workspace volume."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.docker


def test_build_prepare_release_and_purge_are_actions_of_the_plan(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    ctx = tmp_path / "img"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo built > /built.txt\n")
    app = tmp_path / "app"
    app.mkdir()
    (app / "index.txt").write_text("original\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet_name}
        hosts:
          box:
            build: {{context: ./img}}
        agents:
          worker:
            host: box
            command: ["sleep", "infinity"]
          solo:
            image: {base_image}
            command: ["sleep", "infinity"]
            workspace: {{path: ./app, mode: copy}}
        """))
    doc = json.loads(run_fleet("diff", "-o", "json", str(path)).out)
    by_id = {c["id"]: c for c in doc["changes"]}
    [build] = [c for c in doc["changes"] if c["action"] == "build"]
    assert build["kind"] == "image" and build["cause"] == f"image {build['name']} is not built yet"
    assert build["id"] in by_id["host:box"]["depends_on"]
    prep = by_id["workspace:solo:prepare"]
    assert prep["action"] == "prepare" and prep["cause"].startswith(f"copy {app} to a workspace for agent solo")
    assert prep["id"] in by_id["agent:solo"]["depends_on"]
    assert "1 image to build" in doc["summary"]["text"] and "1 workspace to prepare" in doc["summary"]["text"]

    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    assert "build" in r.out and "prepare" in r.out, r.out
    copy = fleet_home / "workspaces" / fleet_name / "solo" / "index.txt"
    assert copy.read_text() == "original\n"  # the prepare made it, the create mounted it
    solo = docker_client.containers.list(filters={"label": [f"dev.fleet.project={fleet_name}", "dev.fleet.agent=solo"]})
    assert solo[0].exec_run(["cat", "/workspace/index.txt"]).output == b"original\n"
    # built now: nothing to build, nothing to do
    r = run_fleet("diff", str(path))
    assert "up to date" in r.out, r.out

    # the agent goes: its workspace is released after it (a copy is kept, and the cause says so)
    path.write_text(path.read_text().split("  solo:")[0])
    doc = json.loads(run_fleet("diff", "-o", "json", str(path)).out)
    [rel] = [c for c in doc["changes"] if c["action"] == "release"]
    assert rel["kind"] == "workspace" and rel["name"] == "solo" and "is kept" in rel["cause"]
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    assert "kept workspace of solo" in r.out, r.out

    # the shared host's workspace volume: purged as an action of the destroy plan
    vols = {v.name for v in docker_client.volumes.list(filters={"label": f"dev.fleet.project={fleet_name}"})}
    assert vols, "the holder has a workspace volume"
    r = run_fleet("destroy", "--yes", "--purge-workspaces", str(path))
    assert r.code == 0, r.text
    assert "purge" in r.out and "volume" in r.out and "to purge" in r.out, r.out
    for name in vols:
        assert name in r.out, r.out
    assert not docker_client.volumes.list(filters={"label": f"dev.fleet.project={fleet_name}"})
