"""The route action appears only when the route table would change, with a
cause naming whose routes change; shared Docker holders publish nothing, so
agents join and leave them (with or without ports) without replacing them."""

from __future__ import annotations

from reconciler.core.reconcile import MIGRATE_PUBLISHED, reconcile
from reconciler.routing.table import routes_for
from tests.unit.builders import agent, by_id, desired, host, observed, ops, seen, seen_host, settled


def route(plan):
    return by_id(plan).get("route:routes")


def test_adding_an_agent_without_ports_has_no_route_action():
    before = desired(agent("web", ports={"web": 3000}))
    after = desired(agent("web", ports={"web": 3000}), agent("worker"))
    o = settled(before, seen(before.agents["web"]))
    plan = reconcile(after, o)
    assert ops(plan) == {"agent:worker": "create"}
    assert route(plan) is None
    assert "route:routes" in plan.unchanged


def test_removing_an_agent_without_routes_has_no_route_action():
    d = desired(agent("web", ports={"web": 3000}))
    old = seen(agent("worker"))
    o = settled(d, seen(d.agents["web"]), old)
    plan = reconcile(d, o)
    assert ops(plan) == {f"agent:worker:destroy:{old.id[:12]}": "destroy"}
    assert route(plan) is None


def test_replacing_an_agent_without_ports_has_no_route_action():
    d = desired(agent("web", ports={"web": 3000}), agent("worker", env={"A": "2"}))
    o = settled(d, seen(d.agents["web"]), seen(d.agents["worker"], env={"A": "1"}))
    plan = reconcile(d, o)
    assert ops(plan) == {"agent:worker": "replace"}
    assert route(plan) is None


def test_adding_an_agent_with_a_port_routes_it_and_names_it():
    before = desired(agent("web", ports={"web": 3000}))
    after = desired(agent("web", ports={"web": 3000}), agent("api", ports={"api": 8000}))
    plan = reconcile(after, settled(before, seen(before.agents["web"])))
    act = route(plan)
    assert act is not None and act.cause == "routes of api (added)"
    assert act.depends_on == ("agent:api",)


def test_removing_an_agent_with_routes_names_it():
    d = desired(agent("web", ports={"web": 3000}))
    both = desired(agent("web", ports={"web": 3000}), agent("api", ports={"api": 8000}))
    gone = seen(both.agents["api"])
    o = settled(both, seen(d.agents["web"]), gone)
    plan = reconcile(d, o)
    act = route(plan)
    assert act is not None and act.cause == "routes of api (removed)"
    assert act.depends_on == (f"agent:api:destroy:{gone.id[:12]}",)


def test_replacing_an_agent_with_ports_moves_its_route():
    d = desired(agent("web", ports={"web": 3000}, env={"A": "2"}))
    o = settled(d, seen(d.agents["web"], env={"A": "1"}))
    act = route(reconcile(d, o))
    assert act is not None and act.cause == "routes of web (replaced)"


def test_starting_an_exited_agent_with_ports_routes_it_again():
    d = desired(agent("web", ports={"web": 3000}))
    running = seen(d.agents["web"])
    o = settled(d, running).model_copy(
        update={"agents": (running.model_copy(update={"state": "exited", "exit_code": 137}),)}
    )
    act = route(reconcile(d, o))
    assert act is not None and act.cause == "routes of web (started)"


def test_many_agents_are_summarised():
    names = ["a1", "a2", "a3", "a4", "a5", "a6"]
    d = desired(*(agent(n, ports={"web": 3000}) for n in names))
    act = route(reconcile(d, observed(routes=())))
    assert act is not None
    assert act.cause == "routes of a1 (added), a2 (added), a3 (added), a4 (added) and 2 more"


def test_nothing_changed_no_route_action():
    d = desired(host("box"), agent("impl", host="box", ports={"web": 3000}), agent("tests", host="box"))
    h = seen_host(d.hosts["box"])
    o = settled(d, h, seen(d.agents["impl"], host_id=h.id), seen(d.agents["tests"], host_id=h.id))
    plan = reconcile(d, o)
    assert plan.empty, [(a.id, a.cause) for a in plan.actions]


def test_joining_a_shared_docker_host_with_a_port_leaves_the_holder_and_neighbours():
    before = desired(host("box"), agent("impl", host="box", ports={"web": 3000}))
    after = desired(host("box"), agent("impl", host="box", ports={"web": 3000}), agent("tests", host="box", ports={"api": 8000}))
    assert before.hosts["box"].spec_hash == after.hosts["box"].spec_hash
    h = seen_host(before.hosts["box"])
    o = settled(before, h, seen(before.agents["impl"], host_id=h.id))
    plan = reconcile(after, o)
    assert ops(plan) == {"agent:tests": "join"}
    assert route(plan).cause == "routes of tests (added)"
    # and leaving again: only the leaver goes
    o2 = settled(after, h, seen(after.agents["impl"], host_id=h.id), left := seen(after.agents["tests"], host_id=h.id))
    plan = reconcile(before, o2)
    assert ops(plan) == {f"agent:tests:destroy:{left.id[:12]}": "destroy"}
    assert route(plan).cause == "routes of tests (removed)"


def test_shared_docker_routes_go_to_the_holder_address():
    d = desired(host("box"), agent("impl", host="box", ports={"web": 3000}))
    h = seen_host(d.hosts["box"]).model_copy(update={"address": "172.18.0.7"})
    routes = routes_for(d, observed(h, seen(d.agents["impl"], host_id=h.id)))
    assert [r.target for r in routes] == ["http://172.18.0.7:3000"]


def test_private_agents_keep_their_published_port_as_target():
    d = desired(agent("web", ports={"web": 3000}))
    a = seen(d.agents["web"], ports={3000: 49153}).model_copy(update={"address": "172.17.0.3"})
    assert [r.target for r in routes_for(d, observed(a))] == ["http://127.0.0.1:49153"]


def test_a_holder_that_publishes_ports_is_replaced_once_with_a_clear_cause():
    d = desired(host("box"), agent("impl", host="box", ports={"web": 3000}))
    old_spec = {**d.hosts["box"].spec(), "ports": [3000]}
    from reconciler.core.model import canonical_hash

    h = seen_host(d.hosts["box"]).model_copy(update={"spec": old_spec, "spec_hash": canonical_hash(old_spec), "ports": {3000: 40000}})
    plan = reconcile(d, observed(h, seen(d.agents["impl"], host_id=h.id)))
    acts = by_id(plan)
    assert acts["host:box"].op == "replace" and acts["host:box"].cause == MIGRATE_PUBLISHED
    assert acts["agent:impl"].op == "replace"


def test_a_holder_without_ports_made_before_keeps_its_hash():
    # holders that never published anything carried "ports": [] already: no migration
    d = desired(host("box"), agent("tests", host="box"))
    assert d.hosts["box"].spec()["ports"] == []
    d2 = desired(host("box"), agent("tests", host="box", ports={"web": 3000}))
    assert d2.hosts["box"].spec()["ports"] == []


def test_route_action_waits_for_a_duplicate_going_even_when_no_route_moves_by_name():
    """Found by test_properties: with no route table yet, agent `a` running on
    its host and as a stray private duplicate, the route action used to depend on
    nothing, so it could write the duplicate's route before the duplicate went
    and the next plan said "route table out of date"."""
    from reconciler.core.model import Observed
    from reconciler.core.reconcile import Options, reconcile
    from tests.unit.builders import agent, desired, host, seen, seen_host
    from tests.unit.test_properties import converge

    d = desired(host("h1"), agent("a", host="h1", ports={"s0": 3000}), agent("e"))
    hs = [seen_host(d.hosts["h1"], id="h00000000001", created="2026-01-01"),
          seen_host(d.hosts["h1"], id="h00000000002", created="2026-01-01")]
    ags = [seen(d.agents["a"], id="a00000000006", created="2026-01-01"),
           seen(d.agents["a"], id="a00000000007", created="2026-01-01", host=None)]
    o = Observed(fleet="demo", hosts=tuple(hs), agents=tuple(ags), routes=None)
    plan = reconcile(d, o, Options(prune=True))
    route = next(a for a in plan.actions if a.kind == "route")
    changing = {a.id for a in plan.actions if a.kind in ("host", "agent") and a.op != "message"}
    assert changing <= set(route.depends_on)
    for seed in range(8):  # every execution order the property test may draw
        _, world = converge(d, o, Options(prune=True), seed)
        assert reconcile(d, world.observed(), Options(prune=True)).empty, seed
