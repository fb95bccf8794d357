"""Built images are plan actions: reconcile removes the fleet's built images that
nothing uses once the plan is carried out, and `fleet destroy` removes them all.
Pure: hand-made Desired/Observed (the real engine test is
tests/e2e/test_build_images.py)."""

from __future__ import annotations

import json

from reconciler.core.model import ImageRef
from reconciler.core.reconcile import Options, reconcile, reconcile_destroy
from tests.unit.builders import agent, desired, host, observed, seen, seen_host

OLD = "fleet-demo-build:1111111111111111"
NEW = "fleet-demo-build:2222222222222222"


def with_images(obs, *refs):
    return obs.model_copy(update={"images": tuple(refs)})


def image_actions(plan):
    return {a.name: a for a in plan.actions if a.kind == "image"}


def test_an_edited_build_context_replaces_the_agent_then_removes_the_old_image():
    web = agent("web", image=NEW)
    running = seen(web, image=ImageRef(ref=OLD))
    plan = reconcile(desired(web), with_images(observed(running), OLD))
    (replace,) = [a for a in plan.actions if a.kind == "agent"]
    assert replace.op == "replace"
    (img,) = image_actions(plan).values()
    assert (img.op, img.name, img.provider) == ("destroy", OLD, "docker")
    assert img.cause == "built image no longer used"
    assert replace.id in img.depends_on
    assert not img.disruptive and plan.disruptive  # the replace is, the image removal is not


def test_images_in_use_stay():
    web = agent("web", image=NEW)
    box = host("box", image=OLD)
    impl = agent("impl", host="box", image=OLD)
    obs = with_images(observed(seen(web), seen_host(box), seen(impl)), OLD, NEW)
    plan = reconcile(desired(web, box, impl), obs)
    assert image_actions(plan) == {} and plan.empty


def test_a_disabled_agent_keeps_its_image_and_a_stray_untagged_build_goes():
    web = agent("web", image=OLD, enabled=False)
    plan = reconcile(desired(web), with_images(observed(seen(web, state="exited", exit_code=0)), OLD, "sha256:" + "a" * 64))
    assert set(image_actions(plan)) == {"sha256:" + "a" * 64}


def test_a_container_that_stays_keeps_its_image_even_if_fleet_yaml_moved_on():
    # --no-prune keeps what fleet.yaml no longer names, and so its image
    gone = agent("old", image=OLD)
    web = agent("web", image=NEW)
    obs = with_images(observed(seen(gone), seen(web)), OLD, NEW)
    assert image_actions(reconcile(desired(web), obs, Options(prune=False))) == {}
    # pruned: the container goes first, then its image
    plan = reconcile(desired(web), obs)
    destroy = next(a for a in plan.actions if a.kind == "agent" and a.op == "destroy")
    assert set(image_actions(plan)) == {OLD} and destroy.id in image_actions(plan)[OLD].depends_on


def test_a_targeted_run_removes_no_image():
    a, b = agent("a", image=NEW), agent("b", image=NEW)
    obs = with_images(observed(seen(a, image=ImageRef(ref=OLD)), seen(b, image=ImageRef(ref=OLD))), OLD)
    plan = reconcile(desired(a, b), obs, Options(targets=frozenset({"a"})))
    assert image_actions(plan) == {}


def test_destroy_removes_every_image_of_the_fleet_after_its_containers():
    web = agent("web", image=NEW)
    plan = reconcile_destroy(with_images(observed(seen(web)), OLD, NEW))
    imgs = image_actions(plan)
    assert set(imgs) == {OLD, NEW}
    container = next(a for a in plan.actions if a.kind == "agent")
    assert all(container.id in i.depends_on for i in imgs.values())


def test_images_are_part_of_the_fingerprint_only_when_there_are_some():
    obs = observed(seen(agent("web")))
    assert with_images(obs).fingerprint() == obs.fingerprint()
    assert with_images(obs, OLD).fingerprint() != obs.fingerprint()


def test_image_actions_render_to_the_documented_output_schema():
    from reconciler.gitops import output
    from tests.gitops.helpers import validate_plan_output

    web = agent("web", image=NEW)
    plan = reconcile(desired(web), with_images(observed(seen(web, image=ImageRef(ref=OLD))), OLD))
    doc = json.loads(output.plan_json(plan, desired(web)))
    validate_plan_output(doc)
    (img,) = [c for c in doc["changes"] if c["kind"] == "image"]
    assert (img["action"], img["name"], img["disruptive"], img["after"]) == ("destroy", OLD, False, None)
    assert doc["changes"][-1] is img or doc["changes"].index(img) > [c["kind"] for c in doc["changes"]].index("agent")
    assert f"| image | `{OLD}` |" in output.plan_markdown(plan, desired(web))
