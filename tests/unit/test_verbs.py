"""Pure decisions behind `fleet stop/start/restart` and the watch's mass-destroy
guard: reconcile leaves a user-stopped agent stopped, verbs plan only what is
needed, and a plan that destroys more than half of the agents is recognised."""

from __future__ import annotations

import pytest

from reconciler.core.errors import FleetError
from reconciler.core.reconcile import mass_destroy, reconcile
from reconciler.engine.verbs import plan_verb
from tests.unit.builders import agent, desired, host, ops, seen, seen_host, settled


def stopped(a, **kw):
    obs = seen(a, state="exited", exit_code=137, **kw)
    return obs.model_copy(update={"stop_spec_hash": a.spec_hash})


def test_a_user_stopped_agent_stays_stopped_and_the_plan_says_so():
    web, worker = agent("web"), agent("worker")
    d = desired(web, worker)
    plan = reconcile(d, settled(d, stopped(web), seen(worker)))
    assert plan.empty and plan.stopped == ("web",)
    assert "agent:web" in plan.unchanged


def test_without_the_record_an_exited_agent_is_started():
    web = agent("web")
    d = desired(web)
    assert ops(reconcile(d, settled(d, seen(web, state="exited", exit_code=137)))) == {"agent:web": "start"}


def test_a_spec_change_since_the_stop_runs_it_again():
    old = agent("web", env={"TZ": "UTC"})
    new = agent("web", env={"TZ": "Europe/Paris"})
    obs = seen(new, state="exited", env={"TZ": "UTC"}).model_copy(update={"stop_spec_hash": old.spec_hash})
    plan = reconcile(desired(new), settled(desired(new), obs))
    assert ops(plan) == {"agent:web": "replace"} and plan.stopped == ()


def test_found_running_again_it_is_not_called_stopped():
    web = agent("web")
    obs = seen(web).model_copy(update={"stop_spec_hash": web.spec_hash})
    plan = reconcile(desired(web), settled(desired(web), obs))
    assert plan.empty and plan.stopped == ()


def test_replace_flag_and_a_re_created_host_win_over_the_stop():
    from reconciler.core.reconcile import Options

    box = host("box")
    impl = agent("impl", host="box")
    d = desired(box, impl)
    plan = reconcile(d, settled(d, stopped(impl)), Options(replace=frozenset({"impl"})))
    assert ops(plan)["agent:impl"] == "replace"
    plan = reconcile(d, settled(d, stopped(impl)))  # no holder observed: it is created, impl re-joins
    assert ops(plan)["host:box"] == "create" and ops(plan)["agent:impl"] == "replace"


def test_a_held_agent_on_a_restarted_host_is_not_restarted():
    box = host("box")
    impl, tests = agent("impl", host="box"), agent("tests", host="box")
    d = desired(box, impl, tests)
    holder = seen_host(box, state="exited")
    plan = reconcile(d, settled(d, holder, stopped(impl, host_id=holder.id), seen(tests, state="exited", host_id=holder.id)))
    assert ops(plan) == {"host:box": "start", "agent:tests": "restart"} and plan.stopped == ("impl",)


def test_verbs_plan_only_what_is_needed():
    box = host("box")
    a, b, c = agent("a"), agent("b", host="box"), agent("c", host="box")
    d = desired(box, a, b, c)
    holder = seen_host(box)
    obs = settled(d, holder, seen(a), seen(b, host_id=holder.id), seen(c, state="exited", host_id=holder.id))
    assert ops(plan_verb(d, obs, "stop", [], all_agents=True)) == {"agent:a": "stop", "agent:b": "stop"}  # no host
    assert ops(plan_verb(d, obs, "start", ["a", "c"])) == {"agent:c": "start"}
    assert ops(plan_verb(d, obs, "restart", ["a", "c"])) == {"agent:a": "restart", "agent:c": "start"}
    down = settled(d, seen_host(box, state="exited", id=holder.id), seen(a), seen(c, state="exited", host_id=holder.id),
                   seen(b, state="exited", host_id=holder.id))
    plan = plan_verb(d, down, "start", ["b", "c"])
    assert ops(plan) == {"host:box": "start", "agent:b": "start", "agent:c": "start"}
    assert all(act.depends_on == ("host:box",) for act in plan.actions if act.kind == "agent")


def test_verbs_refuse_bad_names_before_anything():
    web, off = agent("web"), agent("off", enabled=False)
    d = desired(web, off, agent("new"))
    obs = settled(d, seen(web), seen(off, state="exited"))
    with pytest.raises(FleetError) as exc:
        plan_verb(d, obs, "stop", ["wbe", "off", "new"])
    text = str(exc.value)
    assert "did you mean 'web'" in text and "disabled" in text and "no container yet" in text
    with pytest.raises(FleetError):
        plan_verb(d, obs, "stop", [])
    with pytest.raises(FleetError):
        plan_verb(d, obs, "stop", ["web"], all_agents=True)


@pytest.mark.parametrize(("kept", "held"), [(0, True), (1, True), (2, True), (3, False), (4, False)])
def test_mass_destroy_is_more_than_half(kept, held):
    names = ["a", "b", "c", "d", "e"]
    all_agents = [agent(n) for n in names]
    obs = settled(desired(*all_agents), *[seen(a) for a in all_agents])
    d = desired(*all_agents[:kept]) if kept else desired()
    plan = reconcile(d, obs)
    got = mass_destroy(plan, obs)
    assert (got is not None) is held
    if held:
        assert got == (5 - kept, 5)


def test_replacing_every_agent_is_not_a_mass_destroy():
    old = [agent(n, env={"V": "1"}) for n in "abc"]
    new = [agent(n, env={"V": "2"}) for n in "abc"]
    obs = settled(desired(*old), *[seen(a) for a in old])
    assert mass_destroy(reconcile(desired(*new), obs), obs) is None


def test_a_started_agent_with_ports_gets_its_routes_back():
    """A (re)started container is published on new host ports: the routes follow
    in the same command (no 502 until the next apply); a stop leaves them be."""
    web, worker = agent("web", ports={"web": 3000}), agent("worker")
    d = desired(web, worker)
    down = settled(d, stopped(web), seen(worker))
    plan = plan_verb(d, down, "start", ["web"])
    assert ops(plan, routes=True) == {"agent:web": "start", "route:routes": "route"}
    route = next(a for a in plan.actions if a.kind == "route")
    assert route.depends_on == ("agent:web",) and route.cause == "routes of web (started)"
    up = settled(d, seen(web), seen(worker))
    assert ops(plan_verb(d, up, "restart", ["web"]), routes=True)["route:routes"] == "route"
    assert "route:routes" not in ops(plan_verb(d, up, "stop", ["web"]), routes=True)
    assert plan_verb(d, up, "start", ["web"]).empty  # already running: nothing moves
    # a shared host's agent is routed at its holder's address, which its own restart does not move
    box = host("box")
    impl = agent("impl", host="box", ports={"web": 3000})
    d2 = desired(box, impl)
    holder = seen_host(box)
    assert ops(plan_verb(d2, settled(d2, holder, seen(impl, host_id=holder.id)), "restart", ["impl"]), routes=True) == {"agent:impl": "restart"}
    down = settled(d2, seen_host(box, state="exited", id=holder.id), seen(impl, state="exited", host_id=holder.id))
    assert ops(plan_verb(d2, down, "start", ["impl"]), routes=True) == {"host:box": "start", "agent:impl": "start", "route:routes": "route"}
    only_workers = desired(agent("worker"))
    assert ops(plan_verb(only_workers, settled(only_workers, seen(agent("worker"))), "restart", ["worker"]), routes=True) == {"agent:worker": "restart"}
