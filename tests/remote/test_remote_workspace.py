"""A shared host on a remote engine: its workspace is uploaded to the host's
volume there (a plan action, once), its agents share it, a later apply never
overwrites their work, `fleet pull` brings it back, destroy removes what is
there (the volume with --purge-workspaces). Real engine behind sshd, real
containers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.actions import WorkspaceUpload
from reconciler.core.model import DesiredAgent, ImageRef, Workspace
from reconciler.core.plan import VolumePurge
from reconciler.engine.pull import pull
from tests.conftest import BASE_IMAGE
from tests.remote.remote_fleet import (
    apply, cleanup_remote, destroy, engine_of, key_of, plan_of, remote_exec, shared_fleet,
)

pytestmark = pytest.mark.docker


def make_app(root: Path) -> Path:
    app = root / "my-app"
    (app / "src" / "deep").mkdir(parents=True)
    (app / "README.md").write_text("hello from this machine\n")
    (app / "src" / "main.py").write_text("print('hi')\n")
    (app / "src" / "deep" / "data.bin").write_bytes(bytes(range(256)) * 64)
    os.symlink("src/main.py", app / "link.py")
    return app


def tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


@pytest.fixture
def remote_fleet_name(remote_engine, fleet_name):
    yield fleet_name
    cleanup_remote(remote_engine, fleet_name)


def test_shared_workspace_uploaded_once_shared_by_agents_pulled_back_and_purged(remote_engine, remote_fleet_name, tmp_path):
    fleet, remote = remote_fleet_name, remote_engine
    app = make_app(tmp_path)
    d = shared_fleet(fleet, remote, app)
    volume = f"fleet_{fleet}_host_big-box_workspace"

    _, plan = apply(d)
    up = next(a for a in plan.actions if isinstance(a, WorkspaceUpload))
    assert up.provider == key_of(remote) and up.name == "big-box"
    client = remote.docker()
    vol = client.volumes.get(volume)
    assert vol.attrs["Labels"] == {"dev.fleet.project": fleet, "dev.fleet.host": "big-box",
                                   "dev.fleet.kind": "workspace", "dev.fleet.engine": engine_of(remote)}
    # nothing of it on this machine's engine, no helper left on the remote one
    import docker

    assert not docker.from_env().volumes.list(filters={"name": volume})
    assert not client.containers.list(all=True, filters={"label": f"dev.fleet.upload={fleet}/big-box"})
    holder = client.containers.get(f"fleet_{fleet}_host_big-box")
    assert any(m.get("Name") == volume and m["Destination"] == "/workspace" for m in holder.attrs["Mounts"])
    # nothing of this machine's filesystem is bound there (the test's "remote" shares it: a bind would pass unseen)
    assert [m["Type"] for m in holder.attrs["Mounts"]] == ["volume"], holder.attrs["Mounts"]

    # the uploaded content is the local directory's; the agents share it
    code, out = remote_exec(remote, fleet, "impl", "cat /workspace/README.md && readlink /workspace/link.py "
                                                   "&& sha256sum /workspace/src/deep/data.bin")
    assert code == 0 and out.startswith("hello from this machine\nsrc/main.py\n"), out
    import hashlib

    assert hashlib.sha256((app / "src/deep/data.bin").read_bytes()).hexdigest() in out
    assert remote_exec(remote, fleet, "impl", "echo written-by-impl > /workspace/note.txt")[0] == 0
    code, out = remote_exec(remote, fleet, "test", "cat /workspace/note.txt")
    assert (code, out) == (0, "written-by-impl\n")

    # a second apply: nothing to do, nothing uploaded again; the agent's file is still there
    (app / "README.md").write_text("changed here later\n")
    observed, plan = plan_of(d)
    assert volume in observed.engine_volumes[key_of(remote)]
    assert plan.empty, [(a.id, a.cause) for a in plan.actions]
    assert remote_exec(remote, fleet, "test", "cat /workspace/note.txt /workspace/README.md")[1] == \
        "written-by-impl\nhello from this machine\n"

    # fleet pull: the workspace comes back, the agent's file included
    agent = next(a for a in observed.agents if a.name == "test")
    assert agent.engine == engine_of(remote) and agent.key == key_of(remote)
    dest = tmp_path / "pulled"
    got = pull(fleet, agent, dest)
    assert (dest / "note.txt").read_text() == "written-by-impl\n"
    expected = tree(app)
    expected["README.md"] = b"hello from this machine\n"
    pulled = tree(dest)
    assert pulled.pop("note.txt") == b"written-by-impl\n"
    assert pulled == expected and got.files == 4

    # destroy without --purge-workspaces keeps the volume; with it, it goes (on that engine)
    destroy(d)
    assert not client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})
    assert client.volumes.get(volume)
    plan = destroy(d, purge=True)
    purge = next(a for a in plan.actions if isinstance(a, VolumePurge))
    assert (purge.name, purge.provider) == (volume, key_of(remote))
    assert not client.volumes.list(filters={"label": f"dev.fleet.project={fleet}"})


def test_private_agent_with_a_workspace_on_the_remote_engine_gets_its_own_copy(remote_engine, remote_fleet_name, tmp_path):
    fleet, remote = remote_fleet_name, remote_engine
    app = make_app(tmp_path)
    solo = DesiredAgent(name="solo", image=ImageRef(ref=BASE_IMAGE), command=("sleep", "infinity"),
                        workspace=Workspace(path=app), engine=engine_of(remote))
    d = shared_fleet(fleet, remote, app, agents=(), extra=(solo,))
    d = d.model_copy(update={"hosts": {}})
    _, plan = apply(d)
    assert [a.name for a in plan.actions if isinstance(a, WorkspaceUpload)] == ["solo"]
    code, out = remote_exec(remote, fleet, "solo", "pwd; cat README.md; touch mine")
    assert code == 0 and out == "/workspace\nhello from this machine\n", out
    assert not (app / "mine").exists()  # a copy: this machine's directory is untouched
    mounts = remote.docker().containers.get(f"fleet_{fleet}_solo").attrs["Mounts"]
    assert [(m["Type"], m.get("Name")) for m in mounts if m["Destination"] == "/workspace"] == \
        [("volume", f"fleet_{fleet}_host_solo_workspace")]
    assert plan_of(d)[1].empty
    destroy(d, purge=True)
    assert not remote.docker().volumes.list(filters={"label": f"dev.fleet.project={fleet}"})


def test_a_missing_image_on_the_remote_engine_is_a_clear_error_naming_it(remote_engine, remote_fleet_name, tmp_path):
    from reconciler.core.plan import HostCreate
    from reconciler.core.reconcile import reconcile
    from reconciler.engine.execute import execute
    from reconciler.engine.observe import observe
    from tests.remote.remote_fleet import keys

    fleet, remote = remote_fleet_name, remote_engine
    missing = ImageRef(ref="127.0.0.1:1/fleet-nowhere:1")  # no registry there: refused at once
    d = shared_fleet(fleet, remote, make_app(tmp_path), agents=("impl",), image=missing)
    observed = observe(fleet, keys(d))
    plan = reconcile(d, observed)
    assert any(isinstance(a, HostCreate) for a in plan.actions)
    result = execute(d, plan, observed=observed)
    assert not result.ok
    why = " ".join(str(v) for v in result.failed.values())
    assert f"image 127.0.0.1:1/fleet-nowhere:1 is not on engine {engine_of(remote)}" in why, why
    assert not remote.docker().volumes.list(filters={"label": f"dev.fleet.project={fleet}"})  # nothing half-made


def test_a_stranger_volume_with_the_workspace_name_is_never_filled_nor_mounted(remote_engine, remote_fleet_name, tmp_path):
    from reconciler.core.reconcile import reconcile
    from reconciler.engine.execute import execute
    from reconciler.engine.observe import observe
    from tests.remote.remote_fleet import keys

    fleet, remote = remote_fleet_name, remote_engine
    volume = f"fleet_{fleet}_host_big-box_workspace"
    stranger = remote.docker().volumes.create(name=volume, labels={"someone": "else"})
    try:
        d = shared_fleet(fleet, remote, make_app(tmp_path), agents=("impl",))
        observed = observe(fleet, keys(d))
        plan = reconcile(d, observed)
        result = execute(d, plan, observed=observed)
        why = result.failed.get("workspace:big-box:upload", "")
        assert f"volume {volume} on {engine_of(remote)} exists but is not this workspace's" in why, result.failed
        assert "host:big-box" in result.skipped  # nothing mounts it
        assert remote.docker().volumes.get(volume).attrs["Labels"] == {"someone": "else"}
        assert not remote.docker().containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})
    finally:
        stranger.remove(force=True)


def leave_cut_off_upload(remote, fleet: str, owner: str) -> None:
    """The state an upload killed midway leaves: its helper (which made the
    labelled volume) and part of the files, as upload.py makes them."""
    from docker.types import Mount

    from reconciler.providers.docker.upload import UPLOAD, helper_name, volume_labels

    api = remote.docker().api
    volume = f"fleet_{fleet}_host_{owner}_workspace"
    labels = volume_labels(fleet, owner, engine_of(remote))
    c = api.create_container(BASE_IMAGE, command=["true"], name=helper_name(fleet, owner), labels={UPLOAD: f"{fleet}/{owner}"},
                             host_config=api.create_host_config(mounts=[Mount("/workspace", volume, labels=labels)]))
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("half-uploaded.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"half"))
    assert api.put_archive(c["Id"], "/workspace", buf.getvalue())


def test_an_upload_cut_off_midway_is_made_again_by_the_next_apply(remote_engine, remote_fleet_name, tmp_path):
    fleet, remote = remote_fleet_name, remote_engine
    app = make_app(tmp_path)
    d = shared_fleet(fleet, remote, app, agents=("impl",))
    leave_cut_off_upload(remote, fleet, "big-box")
    observed, plan = plan_of(d)
    assert f"fleet_{fleet}_host_big-box_workspace" not in observed.engine_volumes.get(key_of(remote), ())
    assert any(isinstance(a, WorkspaceUpload) for a in plan.actions)
    apply(d)
    code, out = remote_exec(remote, fleet, "impl", "ls /workspace")
    assert code == 0 and out.split() == ["README.md", "link.py", "src"], out
    assert not remote.docker().containers.list(all=True, filters={"label": f"dev.fleet.upload={fleet}/big-box"})
    assert plan_of(d)[1].empty


def test_purge_removes_a_volume_whose_upload_was_cut_off(remote_engine, remote_fleet_name, tmp_path):
    fleet, remote = remote_fleet_name, remote_engine
    d = shared_fleet(fleet, remote, make_app(tmp_path), agents=("impl",))
    leave_cut_off_upload(remote, fleet, "big-box")
    plan = destroy(d, purge=True)
    assert [a.name for a in plan.actions if isinstance(a, VolumePurge)] == [f"fleet_{fleet}_host_big-box_workspace"]
    client = remote.docker()
    assert not client.volumes.list(filters={"label": f"dev.fleet.project={fleet}"})
    assert not client.containers.list(all=True, filters={"label": f"dev.fleet.upload={fleet}/big-box"})
