"""The plan's typed actions and the execution state's view of the world (pure)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from reconciler.core.outcome import Outcome, World
from reconciler.core.plan import (
    ACTION_TYPES,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    AgentRestart,
    AgentStop,
    HostCreate,
    HostReplace,
    ImageDestroy,
    MessageSend,
    Plan,
    RouteSpec,
    RouteUpdate,
    parse_action,
)
from reconciler.core.reconcile import reconcile, reconcile_destroy
from reconciler.core.routes import routes_for, routes_to_write
from tests.unit.builders import agent, desired, host, observed, seen, seen_host

KEYS = ["id", "op", "kind", "name", "host", "provider", "cause", "changes", "depends_on", "desired_host",
        "desired_agent", "observed_host", "observed_agent", "route", "image", "workspace", "restore"]


def _plans() -> list[Plan]:
    d = desired(agent("a", ports={"web": 3000}, message="hi"), agent("b", host="h"), agent("off", enabled=False), host("h"))
    old = desired(agent("a", ports={"web": 3000}, env={"X": "1"}), agent("b", host="h"), agent("c"), agent("off"),
                  host("h", image="img:0"))
    obs = observed(seen(old.agents["a"]), seen(old.agents["c"]), seen(old.agents["off"]), seen_host(old.hosts["h"]),
                   seen(old.agents["b"], state="exited", exit_code=1))
    return [reconcile(d, observed()), reconcile(d, obs), reconcile_destroy(obs.model_copy(update={"routes": ()}))]


def test_every_action_has_the_same_json_keys_in_the_same_order_and_loads_back_as_its_class():
    seen_classes = set()
    for plan in _plans():
        data = json.loads(plan.model_dump_json())
        for raw, act in zip(data["actions"], plan.actions):
            assert list(raw) == KEYS, type(act).__name__
            seen_classes.add(type(act))
        back = Plan.model_validate_json(plan.model_dump_json())
        assert back == plan and [type(a) for a in back.actions] == [type(a) for a in plan.actions]
    assert {HostReplace, AgentReplace, AgentDestroy, AgentStop, MessageSend, RouteUpdate} <= seen_classes


def test_the_class_follows_kind_and_op():
    a = agent("a")
    assert type(parse_action(dict(id="x", op="join", kind="agent", name="a", cause="c", desired_agent=a))) is AgentCreate
    img = parse_action(dict(id="image:i:destroy", op="destroy", kind="image", name="i", cause="c"))
    assert type(img) is ImageDestroy and not img.disruptive
    removal = parse_action(dict(id="route:routes", op="route", kind="route", name="routes", cause="c", route={"remove": True}))
    assert isinstance(removal, RouteUpdate) and removal.removes
    assert json.loads(removal.model_dump_json())["route"] == {"remove": True}
    assert {c.__name__ for c in ACTION_TYPES} >= {"HostCreate", "AgentRestart", "ImageDestroy"}


@pytest.mark.parametrize("bad", [
    dict(id="x", op="create", kind="host", name="h", cause="c"),  # a host create needs its desired host
    dict(id="x", op="restart", kind="agent", name="a", cause="c", desired_agent=agent("a")),  # ...a restart its container
    dict(id="x", op="explode", kind="agent", name="a", cause="c"),  # no such op
    dict(id="x", op="route", kind="host", name="h", cause="c"),  # no such pair
])
def test_missing_payloads_and_unknown_actions_are_refused(bad):
    with pytest.raises(ValidationError):
        parse_action(bad)


def test_a_create_outcome_gives_a_private_agent_its_published_port():
    d = desired(agent("a", ports={"web": 3000}))
    act = AgentCreate(id="agent:a", op="create", name="a", cause="c", desired_agent=d.agents["a"])
    world = World(observed())
    assert routes_for(d, world.observed()) == []
    act.after(world, Outcome(id="c" * 64, ports={3000: 49153}))
    (route,) = routes_for(d, world.observed())
    assert route.target == "http://127.0.0.1:49153" and route.agent == "a"


def test_a_replaced_holder_moves_its_agents_routes_and_a_stop_drops_them():
    d = desired(agent("b", host="h", ports={"web": 3000}), host("h"))
    h, b = seen_host(d.hosts["h"]), None
    b = seen(d.agents["b"], host_id=h.id)
    world = World(observed(h, b))
    assert [r.target for r in routes_for(d, world.observed())] == ["http://172.17.0.9:3000"]
    HostReplace(id="host:h", name="h", cause="c", desired_host=d.hosts["h"], observed_host=h).after(
        world, Outcome(id="n" * 64, address="172.17.0.42"))
    AgentRestart(id="agent:b", name="b", host="h", cause="c", desired_agent=d.agents["b"], observed_agent=b).after(
        world, Outcome())
    assert [r.target for r in routes_for(d, world.observed())] == ["http://172.17.0.42:3000"]
    assert [x.id for x in world.observed().hosts] == ["n" * 64]
    AgentStop(id="agent:b", name="b", host="h", cause="c", desired_agent=d.agents["b"], observed_agent=b).after(
        world, Outcome())
    assert routes_for(d, world.observed()) == []


def test_routes_to_write_keeps_routes_of_agents_not_running_and_drops_the_gone():
    d = desired(agent("a", ports={"web": 3000}), agent("b", ports={"web": 3000}))
    old = [{"agent": n, "service": "web", "container_port": 3000, "target": f"http://127.0.0.1:{p}", "tls": True,
            "inner_port": None} for n, p in (("b", 40002), ("gone", 40003))]
    now = observed(seen(d.agents["a"], ports={3000: 40001}), seen(d.agents["b"], state="exited"), routes=tuple(old))
    routes = routes_to_write(d, now)
    assert routes is not None
    assert [(r.agent, r.target) for r in routes] == [("a", "http://127.0.0.1:40001"), ("b", "http://127.0.0.1:40002")]
    assert routes_to_write(desired(agent("x")), observed(routes=())) is None  # no ports at all: the entry goes


def test_destroy_removes_the_fleets_routes_with_a_typed_payload():
    d = desired(agent("a"))
    plan = reconcile_destroy(observed(seen(d.agents["a"]), routes=()))
    (route,) = [a for a in plan.actions if isinstance(a, RouteUpdate)]
    assert route.route == RouteSpec(remove=True) and route.depends_on == (plan.actions[0].id,)
    assert HostCreate.OPS == ("create",) and AgentCreate.OPS == ("create", "join")
