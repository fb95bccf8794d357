"""Side effects of hosts and agents on a remote Docker engine (`engine:`), decided
in the pure core (core/effects_hosts.py): the workspace is uploaded to the owner's
volume there only while that volume is missing, builds happen per engine, volumes
are purged on the engine they were found on."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.actions import WorkspaceUpload
from reconciler.core.model import BuildSpec, ImageRef, WorkspaceSpec
from reconciler.core.plan import ImageBuild, VolumePurge, WorkspacePrepare, WorkspaceRelease, parse_action
from reconciler.core.reconcile import reconcile, reconcile_destroy
from reconciler.view.render import plan_lines
from tests.unit.builders import FLEET, agent, by_id, desired, host, observed, seen, seen_host, settled

E = "ssh://dev@big-box"
KEY = f"docker@{E}"
VOL = f"fleet_{FLEET}_host_big-box_workspace"
BUILT = ImageRef(ref="fleet_demo_build:abc123", build=BuildSpec(context=Path("/src"), context_hash="abc123"))


def remote_fleet(image: ImageRef | None = None):
    h = host("big-box", workspace="/src/my-app").model_copy(update={"engine": E})
    a = agent("impl", host="big-box").model_copy(update={"engine": E})
    b = agent("test", host="big-box").model_copy(update={"engine": E})
    if image is not None:
        h = h.model_copy(update={"image": image})
        a = a.model_copy(update={"image": image})
        b = b.model_copy(update={"image": image})
    return desired(h, a, b)


def test_a_remote_shared_host_gets_its_workspace_uploaded_before_it_is_created():
    d = remote_fleet()
    plan = reconcile(d, observed())
    acts = by_id(plan)
    up = acts["workspace:big-box:upload"]
    assert isinstance(up, WorkspaceUpload) and up.provider == KEY and up.name == "big-box"
    assert up.workspace == d.hosts["big-box"].workspace and up.image == d.hosts["big-box"].image
    assert up.cause.startswith(f"host big-box runs on {E}: /src/my-app is copied to volume {VOL} there")
    assert up.id in acts["host:big-box"].depends_on
    assert acts["host:big-box"].provider == KEY and acts["agent:impl"].provider == KEY
    assert not [a for a in plan.actions if isinstance(a, WorkspacePrepare)]  # nothing made on this machine
    assert "1 workspace to upload" in plan.summary()
    text = "\n".join(line.plain for line in plan_lines(plan))
    assert "+ upload   workspace big-box" in text, text
    # a saved plan loads it back as the same class
    assert parse_action(up.model_dump(mode="json")) == up


def test_no_upload_once_the_volume_exists_on_that_engine_and_a_no_op_plan_is_empty():
    d = remote_fleet()
    h = seen_host(d.hosts["big-box"]).model_copy(update={"engine": E})
    agents = [seen(d.agents[n], host_id=h.id).model_copy(update={"engine": E}) for n in ("impl", "test")]
    obs = settled(d, h, *agents).model_copy(update={"engine_volumes": {KEY: (VOL,)}})
    assert reconcile(d, obs).empty
    # a replace of the host (its image changes) keeps the volume as it is: no upload
    d2 = remote_fleet(ImageRef(ref="img:2"))
    plan = reconcile(d2, obs)
    assert by_id(plan)["host:big-box"].op == "replace"
    assert not [a for a in plan.actions if isinstance(a, WorkspaceUpload)]


def test_a_volume_of_that_name_on_another_engine_does_not_count():
    d = remote_fleet()
    obs = observed().model_copy(update={"volumes": (VOL,), "engine_volumes": {"docker@ssh://other": (VOL,)}})
    assert "workspace:big-box:upload" in by_id(reconcile(d, obs))


def test_builds_are_per_engine_and_the_upload_waits_for_the_build():
    d = remote_fleet(BUILT)
    local = agent("solo").model_copy(update={"image": BUILT})
    d = desired(*d.hosts.values(), *d.agents.values(), local)
    plan = reconcile(d, observed().model_copy(update={"images": (BUILT.ref,)}))  # built here already
    builds = [a for a in plan.actions if isinstance(a, ImageBuild)]
    assert [(b.id, b.provider) for b in builds] == [(f"image:{BUILT.ref}@{E}:build", KEY)]
    assert builds[0].cause == f"image {BUILT.ref} is not built on {E} yet"
    acts = by_id(plan)
    assert builds[0].id in acts["workspace:big-box:upload"].depends_on
    assert builds[0].id in acts["host:big-box"].depends_on and builds[0].id in acts["agent:impl"].depends_on
    assert not acts["agent:solo"].depends_on or builds[0].id not in acts["agent:solo"].depends_on
    # neither built: one build on each engine, different ids
    plan = reconcile(d, observed())
    builds = sorted((b.id, b.provider) for b in plan.actions if isinstance(b, ImageBuild))
    assert builds == sorted([(f"image:{BUILT.ref}:build", "docker"), (f"image:{BUILT.ref}@{E}:build", KEY)])
    # built on both: nothing
    both = observed().model_copy(update={"images": (BUILT.ref,), "engine_images": {KEY: (BUILT.ref,)}})
    assert not [b for b in reconcile(d, both).actions if isinstance(b, ImageBuild)]


def test_a_private_agent_on_a_remote_engine_uploads_to_its_own_volume():
    for mode in ("shared", "copy", "worktree"):
        a = agent("solo").model_copy(update={"engine": E, "workspace": WorkspaceSpec(path=Path("/src/app"), mode=mode)})
        plan = reconcile(desired(a), observed())
        acts = by_id(plan)
        up = acts["workspace:solo:upload"]
        assert up.provider == KEY and up.id in acts["agent:solo"].depends_on
        assert f"volume fleet_{FLEET}_host_solo_workspace" in up.cause
        assert ("a copy" in up.cause) == (mode == "worktree")
        assert not [x for x in plan.actions if isinstance(x, WorkspacePrepare)]


def test_destroying_a_remote_owner_releases_nothing_here_and_purge_goes_to_its_engine():
    a = agent("solo").model_copy(update={"engine": E, "workspace": WorkspaceSpec(path=Path("/src/app"), mode="copy")})
    rec = seen(a).model_copy(update={"engine": E})
    plan = reconcile(desired(), observed(rec))
    assert not [x for x in plan.actions if isinstance(x, WorkspaceRelease)]
    obs = observed(rec).model_copy(update={
        "volumes": ("fleet_demo_host_h_workspace",), "engine_volumes": {KEY: (VOL,)}})
    purges = {x.id: x for x in reconcile_destroy(obs, purge_volumes=True).actions if isinstance(x, VolumePurge)}
    assert purges["volume:fleet_demo_host_h_workspace:purge"].provider == "docker"
    remote = purges[f"volume:{VOL}@{E}:purge"]
    assert remote.provider == KEY and remote.name == VOL and E in remote.cause


def test_a_built_image_no_longer_used_on_a_remote_engine_goes_from_that_engine_only():
    from reconciler.core.plan import ImageDestroy

    d = remote_fleet(BUILT)
    h = seen_host(d.hosts["big-box"]).model_copy(update={"engine": E})
    agents = [seen(d.agents[n], host_id=h.id).model_copy(update={"engine": E}) for n in ("impl", "test")]
    old = "fleet_demo_build:old"
    obs = settled(d, h, *agents).model_copy(update={
        "engine_volumes": {KEY: (VOL,)}, "images": (old,), "engine_images": {KEY: (BUILT.ref, old)}})
    gone = sorted((a.id, a.provider) for a in reconcile(d, obs).actions if isinstance(a, ImageDestroy))
    assert gone == sorted([(f"image:{old}:destroy", "docker"), (f"image:{old}@{E}:destroy", KEY)])
    # the same build used only here: the remote copy goes, the local one stays
    local = agent("solo").model_copy(update={"image": ImageRef(ref=old)})
    d2 = desired(*d.hosts.values(), *d.agents.values(), local)
    obs2 = obs.model_copy(update={"agents": obs.agents + (seen(local),)})
    gone = sorted((a.id, a.provider) for a in reconcile(d2, obs2).actions if isinstance(a, ImageDestroy))
    assert gone == [(f"image:{old}@{E}:destroy", KEY)]


def test_the_plan_output_schema_knows_the_upload_and_per_engine_builds():
    from reconciler.gitops.output import plan_document
    from tests.gitops.helpers import validate_plan_output

    d = remote_fleet(BUILT)
    plan = reconcile(d, observed())
    doc = plan_document(plan)
    validate_plan_output(doc)
    rows = {row["id"]: row for row in doc["changes"]}
    up = rows["workspace:big-box:upload"]
    assert (up["action"], up["kind"], up["engine"]) == ("upload", "workspace", E)
    assert (up["before"], up["after"]) == ({}, {})
    assert rows[f"image:{BUILT.ref}@{E}:build"]["engine"] == E


def test_nothing_is_uploaded_or_built_on_an_engine_that_does_not_answer():
    d = remote_fleet(BUILT)
    plan = reconcile(d, observed().model_copy(update={"unreachable": {E: "ssh: connect refused"}}))
    assert not [a for a in plan.actions if isinstance(a, (WorkspaceUpload, ImageBuild))]
