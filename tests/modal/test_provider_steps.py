"""The Modal provider's single-purpose host steps, in process, through the real
`modal` SDK against the fake: snapshot_host, observe_snapshots, terminate_host
and create_host from a given snapshot id (what a plan resolves `restore:
latest` to), each one thing to one sandbox."""

from __future__ import annotations

import docker
import pytest

from reconciler.load.loader import load
from reconciler.providers.modal.driver import ModalProvider
from tests.conftest import free_port
from tests.modal.helpers import fleet_yaml, sandboxes, terminate_fleet

pytestmark = pytest.mark.docker


def _cat(fake_modal, fleet: str, path: str) -> str:
    [sb] = sandboxes(fake_modal, fleet)
    return docker.from_env().containers.get(sb.container_id).exec_run(["cat", path]).output.decode()


def test_snapshot_terminate_and_restore_are_separate_steps(fake_modal, modal_client, fleet_name, tmp_path):
    name = fleet_name
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("uploaded\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(name, free_port(), ws, agents=False))  # with restore: latest
    desired = load(path)
    host = desired.hosts["auth-host"]
    p = ModalProvider(client=modal_client)
    try:
        assert p.observe_snapshots(name) == {}
        assert p.create_host(desired, host).note is None  # nothing recorded to restore yet
        [obs], _ = p.observe(name)
        assert _cat(fake_modal, name, "/workspace/notes.txt") == "uploaded\n"
        [sb] = sandboxes(fake_modal, name)
        docker.from_env().containers.get(sb.container_id).exec_run(["sh", "-c", "echo worked > /workspace/notes.txt"])

        snap = p.snapshot_host(name, obs)
        assert snap is not None and snap.startswith("im-")
        assert p.observe_snapshots(name) == {"auth-host": snap}
        assert len(sandboxes(fake_modal, name)) == 1  # a snapshot leaves the sandbox running

        p.terminate_host(name, obs)
        assert sandboxes(fake_modal, name) == []
        assert p.observe(name) == ([], [])
        p.terminate_host(name, obs)  # gone already: fine
        assert p.snapshot_host(name, obs) is None  # nothing left to save

        note = p.create_host(desired, host, restore=snap).note  # the id a plan resolved, not looked up here
        assert note is not None and f"started from snapshot {snap}" in note
        [again], _ = p.observe(name)
        assert again.id != obs.id
        assert _cat(fake_modal, name, "/workspace/notes.txt") == "worked\n"  # the snapshot, not a new upload

        # the plan's two steps before a host goes: snapshot, then terminate
        newer = p.snapshot_host(name, again)
        assert newer is not None and newer != snap
        p.terminate_host(name, again)
        assert sandboxes(fake_modal, name) == []
        assert p.observe_snapshots(name)["auth-host"] != snap  # the newest one
    finally:
        terminate_fleet(fake_modal, name)
