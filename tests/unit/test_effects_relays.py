"""The grants relay of a Modal host is a plan action decided by reconcile
(core/effects.py): started when a Modal host has agents with grants and
observation finds no relay running, or the host's sandbox is new; its agents'
creates wait for it; stopped when no agent on the host has grants any more, the
host goes, or the fleet is destroyed. Pure: hand-made Desired/Observed (the
real thing: tests/modal/test_modal_grants.py)."""

from __future__ import annotations

import json

from reconciler.core.model import ImageRef
from reconciler.core.effects import issue_id, relay_id
from reconciler.core.plan import Plan, RelayStart, RelayStop, parse_action
from reconciler.core.reconcile import reconcile, reconcile_destroy
from reconciler.gitops.output import plan_document
from reconciler.view.render import plan_lines
from tests.gitops.helpers import validate_plan_output
from tests.unit.builders import agent, by_id, desired, host, observed, seen, seen_host

BOX = host("box", provider="modal")


def coder(**kw):
    return agent("coder", host="box", provider="modal", grants=("github",), **kw)


def with_relay(obs, *hosts, credentials=("coder",)):
    return obs.model_copy(update={"relays": tuple(hosts), "credentials": tuple(credentials)})


def test_a_new_modal_host_with_an_agent_with_grants_gets_its_relay_first():
    plan = reconcile(desired(BOX, coder()), observed())
    acts = by_id(plan)
    start = acts[relay_id("box", "start")]
    assert isinstance(start, RelayStart)
    assert (start.op, start.kind, start.name, start.provider) == ("start", "relay", "box", "modal")
    assert start.cause == "agent coder on host box has grants; it is not running"
    assert start.depends_on == ("host:box",)
    assert set(acts["agent:coder"].depends_on) == {"host:box", issue_id("coder"), start.id}
    assert not start.disruptive and "1 relay to start" in plan.summary()


def test_a_running_relay_and_nothing_changed_is_up_to_date():
    c = coder()
    obs = with_relay(observed(seen_host(BOX), seen(c)), "box")
    plan = reconcile(desired(BOX, c), obs)
    assert plan.empty, [a.id for a in plan.actions]


def test_a_relay_that_is_not_running_is_started_again_alone():
    c = coder()
    plan = reconcile(desired(BOX, c), with_relay(observed(seen_host(BOX), seen(c))))
    assert [a.id for a in plan.actions] == [relay_id("box", "start")]


def test_a_replaced_host_restarts_its_relay():
    c = coder()
    obs = with_relay(observed(seen_host(BOX, image=ImageRef(ref="img:2")), seen(c)), "box")  # the host's spec changed
    acts = by_id(reconcile(desired(BOX, c), obs))
    assert acts["host:box"].op == "replace"
    assert acts[relay_id("box", "start")].cause == "agent coder on host box has grants; its sandbox is new"


def test_no_grants_left_on_the_host_stops_its_relay_after_revoking():
    plain = agent("coder", host="box", provider="modal")
    obs = with_relay(observed(seen_host(BOX), seen(coder())), "box")
    acts = by_id(reconcile(desired(BOX, plain), obs))
    stop = acts[relay_id("box", "stop")]
    assert isinstance(stop, RelayStop) and stop.cause == "no agent on host box has grants"
    assert not stop.disruptive


def test_docker_agents_with_grants_need_no_relay():
    plan = reconcile(desired(agent("web", grants=("github",))), observed())
    assert not [a for a in plan.actions if a.kind == "relay"]


def test_destroy_stops_the_relay_after_the_host_goes():
    c = coder()
    obs = with_relay(observed(seen_host(BOX), seen(c)), "box")
    acts = by_id(reconcile_destroy(obs))
    stop = acts[relay_id("box", "stop")]
    assert "host:box" in stop.depends_on or any(d.startswith("agent:") for d in stop.depends_on)


def test_relay_actions_survive_a_saved_plan_and_render():
    plan = reconcile(desired(BOX, coder()), observed())
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    for a in plan.actions:
        assert type(parse_action(json.loads(a.model_dump_json()))) is type(a)
    validate_plan_output(plan_document(plan, desired(BOX, coder())))
    text = "\n".join(t.plain for t in plan_lines(plan))
    assert "relay box" in text and "has grants; it is not running" in text


def test_the_fingerprint_sees_relays():
    base = observed()
    assert base.fingerprint() != with_relay(base, "box").fingerprint()


def test_a_target_elsewhere_leaves_the_relay_alone():
    from reconciler.core.reconcile import Options

    other = agent("web")
    plan = reconcile(desired(BOX, coder(), other), observed(), Options(targets=frozenset({"web"})))
    assert not [a for a in plan.actions if a.kind == "relay"]
    plan = reconcile(desired(BOX, coder(), other), observed(), Options(targets=frozenset({"coder"})))
    assert relay_id("box", "start") in by_id(plan)
