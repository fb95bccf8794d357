"""The host side effects are plan actions decided in the pure core
(core/effects_hosts.py): image builds, Modal snapshots before a host goes,
`restore: latest` resolved to an id, workspace prepare/release, volume purges."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.core.model import BuildSpec, ImageRef, ModalOptions, WorkspaceSpec
from reconciler.core.plan import (
    HostCreate,
    HostDestroy,
    HostReplace,
    HostSnapshot,
    ImageBuild,
    Plan,
    VolumePurge,
    WorkspacePrepare,
    WorkspaceRelease,
    parse_action,
)
from reconciler.core.reconcile import reconcile, reconcile_destroy
from reconciler.gitops.output import plan_document, plan_markdown
from reconciler.view.render import plan_lines
from tests.unit.builders import agent, by_id, desired, host, observed, seen, seen_host, settled

BUILT = ImageRef(ref="fleet_demo_build:abc123", build=BuildSpec(context=Path("/src"), context_hash="abc123"))


def _latest(h):
    return h.model_copy(update={"modal": ModalOptions(restore="latest")})


def _ws(a, path: str, mode: str):
    return a.model_copy(update={"workspace": WorkspaceSpec(path=Path(path), mode=mode)})  # type: ignore[arg-type]


# ---------------------------------------------------------------- image build


def test_a_missing_built_image_is_built_before_every_create_that_runs_it():
    d = desired(agent("a").model_copy(update={"image": BUILT}), agent("b").model_copy(update={"image": BUILT}))
    plan = reconcile(d, observed())
    builds = [a for a in plan.actions if isinstance(a, ImageBuild)]
    assert len(builds) == 1 and builds[0].name == BUILT.ref and builds[0].image == BUILT
    assert builds[0].cause == f"image {BUILT.ref} is not built yet"
    acts = by_id(plan)
    assert builds[0].id in acts["agent:a"].depends_on and builds[0].id in acts["agent:b"].depends_on
    assert "1 image to build" in plan.summary()


def test_an_image_already_built_is_not_built_again_and_pulls_are_no_action():
    d = desired(agent("a").model_copy(update={"image": BUILT}), agent("b"))  # b pulls img:1 inside its create
    plan = reconcile(d, observed().model_copy(update={"images": (BUILT.ref,)}))
    assert not [a for a in plan.actions if isinstance(a, ImageBuild)]


def test_a_no_op_apply_stays_an_empty_plan():
    a = agent("a").model_copy(update={"image": BUILT})
    a = _ws(a, "/src/app", "worktree")
    h = _latest(host("h", provider="modal"))
    b = agent("b", host="h", provider="modal")
    d = desired(a, b, h)
    hrec = seen_host(d.hosts["h"])
    obs = settled(d, seen(d.agents["a"]), seen(d.agents["b"], host_id=hrec.id), hrec)
    obs = obs.model_copy(update={"images": (BUILT.ref,), "snapshots": {"h": "im-old"}})
    assert reconcile(d, obs).empty


# ---------------------------------------------------------------- snapshot before terminate


def test_a_modal_host_is_snapshotted_before_it_goes():
    h = host("h", provider="modal")
    old = desired(h, agent("b", host="h", provider="modal"))
    rec = seen_host(old.hosts["h"])
    b = seen(old.agents["b"], host_id=rec.id)
    plan = reconcile(desired(), observed(rec, b))
    snap = next(a for a in plan.actions if isinstance(a, HostSnapshot))
    gone = next(a for a in plan.actions if isinstance(a, HostDestroy))
    assert snap.observed_host == rec and snap.cause.startswith("keep host h's /workspace before it goes")
    assert snap.id in gone.depends_on
    assert set(gone.depends_on) - {snap.id} <= set(snap.depends_on)  # the agents leave before the snapshot too
    assert f"agent:b:destroy:{b.id[:12]}" in snap.depends_on
    assert not snap.disruptive


def test_a_docker_host_is_not_snapshotted_and_fleet_destroy_snapshots_modal_ones():
    d = desired(host("dh"), agent("x", host="dh"), host("mh", provider="modal"), agent("y", host="mh", provider="modal"))
    obs = observed(seen_host(d.hosts["dh"]), seen_host(d.hosts["mh"]))
    plan = reconcile_destroy(obs)
    snaps = [a for a in plan.actions if isinstance(a, HostSnapshot)]
    assert [s.name for s in snaps] == ["mh"]
    mh = next(a for a in plan.actions if isinstance(a, HostDestroy) and a.name == "mh")
    assert snaps[0].id in mh.depends_on


# ---------------------------------------------------------------- restore: latest


def test_restore_latest_is_resolved_to_the_newest_snapshot_when_planning():
    d = desired(_latest(host("h", provider="modal")), agent("b", host="h", provider="modal"))
    plan = reconcile(d, observed().model_copy(update={"snapshots": {"h": "im-abc"}}))
    create = by_id(plan)["host:h"]
    assert isinstance(create, HostCreate) and create.restore is not None
    assert create.restore.snapshot == "im-abc" and "restore from snapshot im-abc" in create.cause
    text = " ".join(str(line) for line in plan_lines(plan))
    assert "restore from snapshot im-abc" in text
    # a saved plan carries the id it was reviewed with
    back = Plan.model_validate_json(plan.model_dump_json())
    assert by_id(back)["host:h"].restore.snapshot == "im-abc"


def test_without_a_snapshot_the_plan_says_it_starts_from_the_image():
    d = desired(_latest(host("h", provider="modal")), agent("b", host="h", provider="modal"))
    create = by_id(reconcile(d, observed()))["host:h"]
    assert create.restore is not None and create.restore.snapshot is None and create.restore.taken_by is None
    assert "starts from the image" in create.cause


def test_a_replaced_host_restores_the_snapshot_taken_of_the_sandbox_it_replaces():
    new = _latest(host("h", provider="modal"))
    old = new.model_copy(update={"image": ImageRef(ref="img:0")})
    rec = seen_host(old)
    d = desired(new)
    d = d.model_copy(update={"agents": {"b": agent("b", host="h", provider="modal")}})
    plan = reconcile(d, observed(rec).model_copy(update={"snapshots": {"h": "im-older"}}))
    rep = by_id(plan)["host:h"]
    assert isinstance(rep, HostReplace)
    snap = next(a for a in plan.actions if isinstance(a, HostSnapshot))
    assert rep.restore is not None and rep.restore.taken_by == snap.id and snap.id in rep.depends_on
    assert "restore from the snapshot taken before it goes" in rep.cause


def test_restore_is_only_for_modal_hosts_that_ask():
    d = desired(host("h", provider="modal"), agent("b", host="h", provider="modal"))
    assert by_id(reconcile(d, observed().model_copy(update={"snapshots": {"h": "im-x"}})))["host:h"].restore is None


# ---------------------------------------------------------------- workspaces


def test_a_copy_workspace_is_prepared_before_the_create_and_kept_for_a_replace():
    a = _ws(agent("a"), "/src/app", "copy")
    plan = reconcile(desired(a), observed())
    prep = by_id(plan)["workspace:a:prepare"]
    assert isinstance(prep, WorkspacePrepare) and prep.workspace == a.workspace
    assert prep.cause.startswith("copy /src/app to a workspace for agent a")
    assert prep.id in by_id(plan)["agent:a"].depends_on
    assert "1 workspace to prepare" in plan.summary()


def test_a_worktree_names_its_branch_and_a_shared_workspace_needs_no_action():
    wt = _ws(agent("w"), "/repo", "worktree")
    shared = _ws(agent("s"), "/repo", "shared")
    plan = reconcile(desired(wt, shared), observed())
    assert "branch fleet/w" in by_id(plan)["workspace:w:prepare"].cause
    assert "workspace:s:prepare" not in by_id(plan)


def test_a_destroyed_agent_releases_its_workspace_after_it_goes():
    a = _ws(agent("a"), "/repo", "worktree")
    rec = seen(a)
    plan = reconcile(desired(), observed(rec))
    rel = next(x for x in plan.actions if isinstance(x, WorkspaceRelease))
    assert rel.depends_on == (f"agent:a:destroy:{rec.id[:12]}",)
    assert "kept if it holds unsaved work" in rel.cause and rel.workspace == a.workspace
    lines = [str(line) for line in plan_lines(plan)]
    assert "release" in lines[-1]  # shown after the destroy it follows


def test_a_duplicate_going_does_not_release_the_workspace_of_an_owner_that_stays():
    a = _ws(agent("a"), "/repo", "copy")
    plan = reconcile(desired(a), observed(seen(a), seen(a)))
    assert not [x for x in plan.actions if isinstance(x, WorkspaceRelease)]


def test_a_host_workspace_is_prepared_and_released_too():
    h = host("h").model_copy(update={"workspace": WorkspaceSpec(path=Path("/repo"), mode="copy")})
    d = desired(h, agent("b", host="h"))
    assert "workspace:h:prepare" in by_id(reconcile(d, observed()))
    plan = reconcile_destroy(observed(seen_host(d.hosts["h"])))
    assert [x.name for x in plan.actions if isinstance(x, WorkspaceRelease)] == ["h"]


# ---------------------------------------------------------------- volume purge


def test_purge_volumes_are_plan_actions_after_the_host_destroys():
    d = desired(host("h"), agent("b", host="h"))
    rec = seen_host(d.hosts["h"])
    obs = observed(rec).model_copy(update={"volumes": ("fleet_demo_h_workspace",)})
    assert not [a for a in reconcile_destroy(obs).actions if isinstance(a, VolumePurge)]
    plan = reconcile_destroy(obs, purge_volumes=True)
    purge = next(a for a in plan.actions if isinstance(a, VolumePurge))
    assert purge.name == "fleet_demo_h_workspace" and purge.disruptive
    assert f"host:h:destroy:{rec.id[:12]}" in purge.depends_on
    assert "1 volume to purge" in plan.summary()
    # shown, with its cause, in every output
    doc = plan_document(plan)
    row = next(c for c in doc["changes"] if c["kind"] == "volume")
    assert row["action"] == "purge" and "--purge-workspaces" in row["cause"]
    assert "`-` **purge** | volume" in plan_markdown(plan)
    # the volumes alone (nothing else running) still make a plan
    assert not reconcile_destroy(obs.model_copy(update={"hosts": ()}), purge_volumes=True).empty


def test_every_new_action_round_trips_as_its_class():
    classes = {ImageBuild: dict(op="build", kind="image", image=BUILT.model_dump()),
               WorkspacePrepare: dict(op="prepare", kind="workspace", workspace={"path": "/r", "mode": "copy"}),
               WorkspaceRelease: dict(op="release", kind="workspace", workspace={"path": "/r", "mode": "copy"}),
               VolumePurge: dict(op="purge", kind="volume")}
    for cls, fields in classes.items():
        act = parse_action(dict(id="x", name="n", cause="c", **fields))
        assert type(act) is cls
        assert type(parse_action(json.loads(act.model_dump_json()))) is cls


def test_purge_workspaces_plans_one_purge_per_copy_after_the_destroys():
    """`fleet destroy --purge-workspaces`: the copies and worktrees under
    $FLEET_HOME are plan actions too (after every destroy and the owner's
    release), never removed by the CLI outside the plan."""
    from reconciler.core.model import Observed
    from reconciler.core.teardown import reconcile_destroy

    a = seen(_ws(agent("one"), "/src/app", "copy"))
    o = Observed(fleet="demo", agents=(a,), workspace_copies=("old", "one"), routes=None)
    plan = reconcile_destroy(o, purge_volumes=True)
    purges = [x for x in plan.actions if x.kind == "workspace" and x.op == "purge"]
    assert [p.name for p in purges] == ["old", "one"]
    destroy = next(x for x in plan.actions if x.kind == "agent" and x.op == "destroy")
    release = next(x for x in plan.actions if x.kind == "workspace" and x.op == "release")
    assert all(destroy.id in p.depends_on for p in purges)
    assert release.id in purges[1].depends_on and release.id not in purges[0].depends_on
    assert "unsaved work included" in purges[0].cause
    assert "2 workspaces to purge" in plan.summary()
    # a plain destroy lists no copies and purges nothing
    assert not [x for x in reconcile_destroy(o).actions if x.op == "purge"]
