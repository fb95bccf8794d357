"""Agents leaving a shared host that is re-created go first, and routes of
agents that are gone make the route table out of date (no engine)."""

from __future__ import annotations

import pytest

from reconciler.core.model import ImageRef
from reconciler.core.reconcile import reconcile
from reconciler.routing.table import routes_for
from tests.unit.builders import agent, by_id, desired, host, observed, seen, seen_host, settled


def test_an_agent_removed_from_a_replaced_host_is_destroyed_before_the_host_goes():
    # the host is replaced (its image changed) while an agent leaves it
    m = dict(host="box", provider="modal")
    before = desired(host("box", provider="modal"), agent("impl", ports={"web": 3000}, **m), agent("tests", **m))
    after = desired(host("box", provider="modal"), agent("tests", **m))
    h = seen_host(before.hosts["box"], image=ImageRef(ref="older:1"))
    impl = seen(before.agents["impl"], host_id=h.id)
    o = observed(h, impl, seen(before.agents["tests"], host_id=h.id))
    acts = by_id(reconcile(after, o))
    destroy = f"agent:impl:destroy:{impl.id[:12]}"
    assert acts["host:box"].op == "replace" and acts[destroy].op == "destroy"
    assert destroy in acts["host:box"].depends_on  # never an exec into a sandbox being snapshotted
    assert acts["agent:tests"].depends_on == ("host:box",)  # no cycle: the re-joining agent waits for the host
    assert acts[destroy].depends_on == ()


@pytest.mark.parametrize("provider", ["docker", "modal"])
def test_an_agent_with_a_port_leaving_a_shared_host_leaves_it_alone(provider):
    m = dict(host="box", provider=provider)
    before = desired(host("box", provider=provider), agent("impl", ports={"web": 3000}, **m), agent("tests", **m))
    after = desired(host("box", provider=provider), agent("tests", **m))
    h = seen_host(before.hosts["box"])
    impl = seen(before.agents["impl"], host_id=h.id)
    o = settled(before, h, impl, seen(before.agents["tests"], host_id=h.id))
    assert {a.id: a.op for a in reconcile(after, o).actions} == {
        f"agent:impl:destroy:{impl.id[:12]}": "destroy", "route:routes": "route",
    }


def test_routes_of_gone_agents_are_out_of_date_and_kept_ones_are_not():
    d = desired(agent("web", ports={"http": 3000}), agent("idle", ports={"http": 3000}, restart="never"))
    running = seen(d.agents["web"], ports={3000: 49153})
    finished = seen(d.agents["idle"], state="exited", exit_code=0, ports={3000: 49154})
    routes = tuple(r.model_dump() for r in routes_for(d, observed(running, finished)))
    left = dict(routes[0], agent="removed", target="http://127.0.0.1:49999")
    plan = reconcile(d, observed(running, finished, routes=routes + (left,)))
    assert [a.id for a in plan.actions] == ["route:routes"]
    assert by_id(plan)["route:routes"].cause == "route table out of date"
    # a declared agent that is not running keeps its route (removed only when gone)
    idle = dict(routes[0], agent="idle", target="http://127.0.0.1:49998")
    assert reconcile(d, observed(running, finished, routes=routes + (idle,))).empty


def test_routes_to_a_modal_host_go_through_its_router_tunnel_with_the_inner_port():
    from reconciler.core.model import MODAL_ROUTER_PORT

    m = dict(host="box", provider="modal")
    d = desired(host("box", provider="modal"), agent("impl", ports={"web": 3000, "api": 8080}, **m))
    h = seen_host(d.hosts["box"]).model_copy(update={"urls": {MODAL_ROUTER_PORT: "https://r.modal.host"}})
    routes = routes_for(d, observed(h, seen(d.agents["impl"], host_id=h.id)))
    assert [(r.service, r.target, r.inner_port) for r in routes] == [
        ("api", "https://r.modal.host", 8080), ("web", "https://r.modal.host", 3000)]
