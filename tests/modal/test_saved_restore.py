"""`restore: latest` is resolved when planning: the plan names the snapshot, a
saved plan restores exactly the snapshot that was reviewed even when a newer
one is recorded before it is applied, and the snapshot before a host goes is a
plan action of its own. Real `fleet` CLI, real `modal` SDK, fake control plane
(tests/fakes/modal) whose sandboxes are real containers."""

from __future__ import annotations

import json
import re

import pytest

from reconciler.providers.modal import local
from tests.conftest import free_port
from tests.modal.helpers import exec_text, fleet, fleet_yaml, sandboxes, terminate_fleet

pytestmark = pytest.mark.docker


@pytest.fixture
def modal_fleet(fake_modal, fleet_name):
    try:
        yield fleet_name
    finally:
        terminate_fleet(fake_modal, fleet_name)


def test_a_saved_plan_restores_the_snapshot_that_was_reviewed(fake_modal, modal_fleet, tmp_path, fleet_home):
    env = fake_modal.env()
    name = modal_fleet
    ws = tmp_path / "app"
    ws.mkdir()
    (ws / "README.md").write_text("hello\n")
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(name, port, ws))
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    exec_text(path, env, "impl-agent", "echo reviewed > work.txt")

    # the last agents go: a snapshot action, then the host's destroy
    path.write_text(fleet_yaml(name, port, ws, agents=False))
    r = fleet("diff", "-f", str(path), "-o", "json", env=env)
    changes = json.loads(r.out)["changes"]
    snap = [c for c in changes if c["action"] == "snapshot"]
    assert len(snap) == 1 and snap[0]["kind"] == "host" and "before it goes" in snap[0]["cause"], r.out
    gone = next(c for c in changes if c["action"] == "destroy" and c["kind"] == "host")
    assert snap[0]["id"] in gone["depends_on"]
    r = fleet("apply", "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert "snapshot   host auth-host" in r.out or "snapshot host auth-host" in r.out.replace("  ", " "), r.out
    m = re.search(r"snapshot (im-[A-Za-z0-9]+)", r.out)
    assert m, r.out
    reviewed = m.group(1)

    # the plan names the snapshot it will restore, and is saved with it
    path.write_text(fleet_yaml(name, port, ws))
    plan_path = tmp_path / "reviewed.plan"
    r = fleet("plan", "--out", str(plan_path), "-f", str(path), env=env)
    assert r.code == 0, r.text
    assert f"restore from snapshot {reviewed}" in r.out, r.out
    saved = json.loads(plan_path.read_text())
    [create] = [a for a in saved["plan"]["actions"] if a["id"] == "host:auth-host"]
    assert create["restore"] == {"snapshot": reviewed, "taken_by": None}

    # a newer snapshot is recorded after the review: a new plan would pick it...
    local.record_snapshot(name, "auth-host", "im-newerthanreviewed", "sb-elsewhere", "app")
    r = fleet("diff", "-f", str(path), env=env)
    assert "restore from snapshot im-newerthanreviewed" in r.out, r.out
    # ...but the saved plan restores the reviewed one (the newer id does not even exist on Modal)
    r = fleet("apply", str(plan_path), env=env, input="y\n")
    assert r.code == 0, r.text
    assert f"started from snapshot {reviewed}" in r.out, r.out
    assert len(sandboxes(fake_modal, name)) == 1
    assert exec_text(path, env, "impl-agent", "cat work.txt").strip() == "reviewed"
