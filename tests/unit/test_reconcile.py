"""Reconcile with hand-built states: every decision and its cause, no engine."""

from __future__ import annotations

import pytest

from reconciler.core.plan import Plan
from reconciler.core.reconcile import Options, changed_keys, flatten, reconcile, reconcile_destroy
from tests.unit.builders import agent, by_id, desired, host, observed, ops, seen, seen_host, settled


def plan_for(d, o, **opts) -> Plan:
    return reconcile(d, o, Options(**opts)) if opts else reconcile(d, o)


def assert_graph_ok(plan: Plan) -> None:
    ids = [a.id for a in plan.actions]
    assert len(ids) == len(set(ids)), f"duplicate action ids: {ids}"
    for a in plan.actions:
        for dep in a.depends_on:
            assert dep in ids, f"{a.id} depends on unknown {dep}"


# --------------------------------------------------------------------------- create / no-op


def test_nothing_observed_creates_every_private_agent():
    d = desired(agent("web", ports={"http": 3000}), agent("api"))
    plan = plan_for(d, observed())
    assert ops(plan) == {"agent:api": "create", "agent:web": "create"}
    assert {a.cause for a in plan.actions if a.kind == "agent"} == {"no container"}
    assert by_id(plan)["agent:web"].desired_agent == d.agents["web"]
    assert_graph_ok(plan)


def test_everything_matching_is_a_no_op():
    d = desired(agent("web", ports={"http": 3000}), agent("api"))
    o = settled(d, seen(d.agents["web"]), seen(d.agents["api"]))
    plan = plan_for(d, o)
    assert plan.empty
    assert {"agent:api", "agent:web"} <= set(plan.unchanged)
    assert plan.summary() == "fleet demo is up to date"
    assert not plan.disruptive


def test_plan_carries_spec_hash_and_fingerprint():
    d = desired(agent("web"))
    o = observed(seen(d.agents["web"]))
    plan = plan_for(d, o)
    assert plan.spec_hash == d.spec_hash
    assert plan.observed_fingerprint == o.fingerprint()


# --------------------------------------------------------------------------- replace, naming keys


@pytest.mark.parametrize(
    "change, key",
    [
        (dict(env={"TZ": "UTC"}), "env.TZ"),
        (dict(command=("npm", "start")), "command"),
        (dict(image="img:2"), "image"),
        (dict(ports={"http": 3000}), "ports.http"),
        (dict(restart="never"), "restart"),
        (dict(grants=("github",)), "grants"),
        (dict(workspace="/srv/other"), "workspace.path"),
    ],
)
def test_spec_change_replaces_naming_the_key(change, key):
    current = dict(env={"TZ": "Europe/Paris"}, ports={"http": 8080}, grants=("github", "npm"), workspace="/srv/app")
    running = agent("web", **current)
    wanted = agent("web", **{**current, **change})
    d = desired(wanted)
    o = observed(seen(running, id="a" * 64))
    plan = plan_for(d, o)
    act = by_id(plan)["agent:web"]
    assert act.op == "replace"
    assert key in [c.key for c in act.changes]
    assert act.cause.startswith("spec changed: ") and key in act.cause
    assert act.observed_agent.id == "a" * 64 and act.desired_agent == wanted
    assert plan.disruptive


def test_env_change_lists_only_changed_keys_with_before_and_after():
    running = agent("web", env={"TZ": "UTC", "A": "1", "GONE": "x"})
    wanted = agent("web", env={"TZ": "Europe/Paris", "A": "1", "NEW": "y"})
    plan = plan_for(desired(wanted), observed(seen(running)))
    act = by_id(plan)["agent:web"]
    assert [(c.key, c.before, c.after) for c in act.changes] == [
        ("env.GONE", "x", None),
        ("env.NEW", None, "y"),
        ("env.TZ", "UTC", "Europe/Paris"),
    ]
    assert act.cause == "spec changed: env.GONE, env.NEW, env.TZ"


def test_many_changes_are_summarised_in_the_cause():
    running = agent("web", env={f"K{i}": "a" for i in range(6)})
    wanted = agent("web", env={f"K{i}": "b" for i in range(6)})
    act = by_id(plan_for(desired(wanted), observed(seen(running))))["agent:web"]
    assert act.cause == "spec changed: env.K0, env.K1, env.K2, env.K3 and 2 more"
    assert len(act.changes) == 6


def test_hash_differs_without_spec_label_still_replaces():
    a = agent("web")
    o = observed(seen(a, spec={}).model_copy(update={"spec_hash": "0" * 64}))
    act = by_id(plan_for(desired(a), o))["agent:web"]
    assert act.op == "replace" and act.cause.startswith("spec changed")


def test_message_and_enabled_are_not_part_of_the_spec():
    a = agent("web", message="hello")
    assert "message" not in a.spec() and "enabled" not in a.spec()
    plan = plan_for(desired(a), observed(seen(agent("web", message="old"))))
    assert "agent:web" not in ops(plan)


def test_replace_option_forces_replace_of_an_unchanged_agent():
    d = desired(agent("web"), agent("api"))
    o = observed(seen(d.agents["web"]), seen(d.agents["api"]))
    plan = plan_for(d, o, replace=frozenset({"web"}))
    assert ops(plan) == {"agent:web": "replace"}
    assert by_id(plan)["agent:web"].cause == "replace requested (--replace)"


# --------------------------------------------------------------------------- start / restart policy


def test_exited_agent_is_started_with_its_exit_code():
    a = agent("web")
    plan = plan_for(desired(a), observed(seen(a, state="exited", exit_code=137)))
    act = by_id(plan)["agent:web"]
    assert (act.op, act.cause) == ("start", "exited 137")
    assert not act.disruptive


def test_created_never_started_is_started():
    a = agent("web", restart="never")
    act = by_id(plan_for(desired(a), observed(seen(a, state="created"))))["agent:web"]
    assert (act.op, act.cause) == ("start", "created but never started")


@pytest.mark.parametrize("restart, code, started", [
    ("never", 0, False),
    ("never", 1, False),
    ("on-failure", 0, False),
    ("on-failure", 3, True),
    ("always", 0, True),
])
def test_restart_policy_decides_whether_a_finished_agent_is_started(restart, code, started):
    a = agent("job", restart=restart)
    plan = plan_for(desired(a), observed(seen(a, state="exited", exit_code=code)))
    if started:
        assert by_id(plan)["agent:job"].op == "start"
    else:
        assert plan.empty and plan.unchanged == ("agent:job",)


@pytest.mark.parametrize("state", ["restarting", "paused", "removing"])
def test_transient_states_are_left_alone(state):
    a = agent("web")
    plan = plan_for(desired(a), observed(seen(a, state=state)))
    assert plan.empty


def test_dead_container_is_replaced_not_started():
    a = agent("web")
    act = by_id(plan_for(desired(a), observed(seen(a, state="dead"))))["agent:web"]
    assert act.op == "replace" and "dead" in act.cause


# --------------------------------------------------------------------------- destroy / prune


def test_agent_not_in_file_is_destroyed():
    d = desired(agent("web"))
    old = seen(agent("old"), id="b" * 64)
    plan = plan_for(d, observed(seen(d.agents["web"]), old))
    assert ops(plan) == {f"agent:old:destroy:{'b' * 12}": "destroy"}
    act = plan.actions[0]
    assert act.cause == "not in fleet.yaml" and act.observed_agent == old
    assert plan.disruptive


def test_no_prune_keeps_what_the_file_no_longer_names():
    d = desired(agent("web"))
    plan = plan_for(d, observed(seen(d.agents["web"]), seen(agent("old"))), prune=False)
    assert plan.empty


def test_duplicates_keep_the_running_record_with_the_wanted_hash():
    a = agent("web")
    good = seen(a, id="g" * 64, created="2026-01-01T00:00:00Z")
    stale_newer = seen(a, id="s" * 64, created="2026-02-01T00:00:00Z", env={"X": "1"})
    exited_same = seen(a, id="e" * 64, state="exited", exit_code=0, created="2026-03-01T00:00:00Z")
    plan = plan_for(desired(a), observed(stale_newer, good, exited_same))
    assert ops(plan) == {f"agent:web:destroy:{'s' * 12}": "destroy", f"agent:web:destroy:{'e' * 12}": "destroy"}
    assert {a.cause for a in plan.actions} == {"duplicate container"}
    assert plan.unchanged == ("agent:web",)


def test_duplicates_without_a_match_keep_the_newest_and_replace_it():
    a = agent("web", env={"V": "2"})
    older = seen(a, id="o" * 64, created="2026-01-01T00:00:00Z", env={"V": "1"})
    newer = seen(a, id="n" * 64, created="2026-02-01T00:00:00Z", env={"V": "1"})
    plan = plan_for(desired(a), observed(older, newer))
    assert ops(plan) == {f"agent:web:destroy:{'o' * 12}": "destroy", "agent:web": "replace"}
    assert by_id(plan)["agent:web"].observed_agent.id == "n" * 64


def test_duplicates_of_a_disabled_agent_are_destroyed_and_one_is_stopped():
    a = agent("web", enabled=False)
    one = seen(a, id="1" * 64, created="2026-01-01T00:00:00Z")
    two = seen(a, id="2" * 64, created="2026-02-01T00:00:00Z")
    plan = plan_for(desired(a), observed(one, two))
    assert_graph_ok(plan)
    assert ops(plan) == {f"agent:web:destroy:{'1' * 12}": "destroy", "agent:web": "stop"}


# --------------------------------------------------------------------------- enabled: false


def test_disabled_running_agent_is_stopped():
    a = agent("web", enabled=False)
    act = by_id(plan_for(desired(a), observed(seen(agent("web")))))["agent:web"]
    assert (act.op, act.cause) == ("stop", "enabled: false")


def test_disabled_agent_already_stopped_is_unchanged():
    a = agent("web", enabled=False)
    plan = plan_for(desired(a), observed(seen(a, state="exited", exit_code=0)))
    assert plan.empty and plan.unchanged == ("agent:web",)


def test_disabled_agent_with_no_container_is_not_created():
    plan = plan_for(desired(agent("web", enabled=False)), observed())
    assert plan.empty


def test_disabled_agent_with_a_changed_spec_is_stopped_not_replaced():
    a = agent("web", enabled=False, env={"A": "2"})
    plan = plan_for(desired(a), observed(seen(a, env={"A": "1"})))
    assert ops(plan) == {"agent:web": "stop"}


# --------------------------------------------------------------------------- shared hosts


def test_shared_host_is_created_then_agents_join_it():
    d = desired(host("box"), agent("impl", host="box", ports={"web": 3000}), agent("tests", host="box"))
    plan = plan_for(d, observed())
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert acts["host:box"].op == "create" and acts["host:box"].cause == "no holder container"
    assert acts["host:box"].desired_host.ports == (3000,)
    for name in ("impl", "tests"):
        act = acts[f"agent:{name}"]
        assert act.op == "join" and act.cause == "not on host box"
        assert act.depends_on == ("host:box",)
    assert plan.summary().startswith("Plan for demo: 1 to create, 2 to join")


def test_modal_host_noun_in_cause():
    d = desired(host("gpu", provider="modal"), agent("impl", host="gpu", provider="modal"))
    assert by_id(plan_for(d, observed()))["host:gpu"].cause == "no sandbox"


def test_agent_joins_an_existing_running_host_without_dependency():
    d = desired(host("box"), agent("impl", host="box"), agent("tests", host="box"))
    h = seen_host(d.hosts["box"])
    plan = plan_for(d, observed(h, seen(d.agents["impl"], host_id=h.id)))
    assert ops(plan) == {"agent:tests": "join"}
    assert by_id(plan)["agent:tests"].depends_on == ()
    assert "host:box" in plan.unchanged


def test_declared_host_without_agents_runs_nothing():
    d = desired(host("box"), agent("web"))
    plan = plan_for(d, observed(seen(d.agents["web"])))
    assert plan.empty


def test_last_agent_removed_destroys_the_host_after_the_agent():
    d = desired(host("box"), agent("web"))
    h = seen_host(host("box"), id="h" * 64)
    gone = seen(agent("impl", host="box"), id="i" * 64, host_id=h.id)
    plan = plan_for(d, observed(h, gone, seen(d.agents["web"])))
    assert_graph_ok(plan)
    acts = by_id(plan)
    agent_destroy = f"agent:impl:destroy:{'i' * 12}"
    host_destroy = f"host:box:destroy:{'h' * 12}"
    assert acts[agent_destroy].op == "destroy"
    assert acts[host_destroy].op == "destroy"
    assert acts[host_destroy].cause == "no enabled agents on this host"
    assert acts[host_destroy].depends_on == (agent_destroy,)


def test_host_removed_from_file_is_destroyed_after_its_agents():
    d = desired(agent("web"))
    h = seen_host(host("box"), id="h" * 64)
    a1 = seen(agent("impl", host="box"), id="1" * 64, host_id=h.id)
    a2 = seen(agent("tests", host="box"), id="2" * 64, host_id=h.id)
    plan = plan_for(d, observed(h, a1, a2, seen(d.agents["web"])))
    assert_graph_ok(plan)
    host_act = by_id(plan)[f"host:box:destroy:{'h' * 12}"]
    assert host_act.cause == "not in fleet.yaml"
    assert set(host_act.depends_on) == {f"agent:impl:destroy:{'1' * 12}", f"agent:tests:destroy:{'2' * 12}"}


def test_agent_moving_off_a_removed_host_is_replaced_before_the_host_goes():
    d = desired(agent("impl"))
    h = seen_host(host("box"), id="h" * 64)
    on_box = seen(d.agents["impl"], id="i" * 64, host_id=h.id, host="box")
    plan = plan_for(d, observed(h, on_box))
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert acts["agent:impl"].op == "replace" and "host" in acts["agent:impl"].cause
    assert "agent:impl" in acts[f"host:box:destroy:{'h' * 12}"].depends_on


def test_disabling_every_agent_stops_them_before_the_host_is_destroyed():
    d = desired(host("box"), agent("impl", host="box", enabled=False))
    h = seen_host(d.hosts["box"], id="h" * 64)
    plan = plan_for(d, observed(h, seen(agent("impl", host="box"), host_id=h.id)))
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert acts["agent:impl"].op == "stop"
    assert acts[f"host:box:destroy:{'h' * 12}"].depends_on == ("agent:impl",)


def test_port_set_change_leaves_a_docker_holder_and_its_neighbours_alone():
    # the holder publishes nothing: a neighbour gaining a port is replaced alone
    d = desired(host("box"), agent("impl", host="box", ports={"web": 3000}), agent("tests", host="box", ports={"api": 8080}))
    before = desired(host("box"), agent("impl", host="box", ports={"web": 3000}), agent("tests", host="box"))
    h = seen_host(before.hosts["box"])
    o = observed(h, seen(d.agents["impl"], host_id=h.id), seen(before.agents["tests"], host_id=h.id))
    plan = plan_for(d, o)
    assert_graph_ok(plan)
    assert ops(plan) == {"agent:tests": "replace"}
    assert "ports.api" in by_id(plan)["agent:tests"].cause


def test_port_set_change_keeps_a_modal_host_its_router_reaches_every_port():
    # one tunnel per sandbox, to its port router: an agent gaining a port is replaced alone
    d = desired(host("box", provider="modal"), agent("impl", host="box", provider="modal", ports={"web": 3000}),
                agent("tests", host="box", provider="modal", ports={"api": 8080}))
    before = desired(host("box", provider="modal"), agent("impl", host="box", provider="modal", ports={"web": 3000}),
                     agent("tests", host="box", provider="modal"))
    assert before.hosts["box"].spec_hash == d.hosts["box"].spec_hash
    h = seen_host(before.hosts["box"])
    o = observed(h, seen(d.agents["impl"], host_id=h.id), seen(before.agents["tests"], host_id=h.id))
    plan = plan_for(d, o)
    assert_graph_ok(plan)
    assert ops(plan) == {"agent:tests": "replace"}
    assert "ports.api" in by_id(plan)["agent:tests"].cause


def test_modal_host_with_a_tunnel_per_port_is_replaced_once_with_a_clear_cause():
    from reconciler.core.model import canonical_hash
    from reconciler.core.reconcile import MIGRATE_TUNNELS

    d = desired(host("box", provider="modal"), agent("impl", host="box", provider="modal", ports={"web": 3000}))
    old_spec = {k: v for k, v in d.hosts["box"].spec().items() if k != "router"}
    old_spec["ports"] = [3000]  # what an older fleet made: one tunnel per agent port
    h = seen_host(d.hosts["box"]).model_copy(update={"spec": old_spec, "spec_hash": canonical_hash(old_spec)})
    plan = plan_for(d, observed(h, seen(d.agents["impl"], host_id=h.id)))
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert acts["host:box"].op == "replace" and acts["host:box"].cause == MIGRATE_TUNNELS
    assert acts["agent:impl"].op == "replace"
    # once re-created, settled
    h2 = seen_host(d.hosts["box"])
    assert ops(plan_for(d, observed(h2, seen(d.agents["impl"], host_id=h2.id)))) == {}


def test_env_change_on_host_replaces_agents_not_the_holder():
    # host env is merged into each agent's env: the holder does not carry it
    d = desired(host("box"), agent("impl", host="box", env={"LEVEL": "2"}))
    h = seen_host(d.hosts["box"])
    plan = plan_for(d, observed(h, seen(d.agents["impl"], host_id=h.id, env={"LEVEL": "1"})))
    assert ops(plan) == {"agent:impl": "replace"}


def test_stopped_holder_is_started_and_its_agents_restarted():
    d = desired(host("box"), agent("impl", host="box"), agent("tests", host="box"))
    h = seen_host(d.hosts["box"], state="exited")
    o = observed(h, seen(d.agents["impl"], host_id=h.id), seen(d.agents["tests"], host_id=h.id, state="exited", exit_code=137))
    plan = plan_for(d, o)
    acts = by_id(plan)
    assert acts["host:box"].op == "start" and acts["host:box"].cause == "holder container exited"
    for name in ("impl", "tests"):
        assert acts[f"agent:{name}"].op == "restart"
        assert acts[f"agent:{name}"].depends_on == ("host:box",)
        assert acts[f"agent:{name}"].cause == "host box restarted"


def test_agent_joined_to_a_stale_holder_is_replaced():
    d = desired(host("box"), agent("impl", host="box"))
    h = seen_host(d.hosts["box"], id="new" + "0" * 61)
    plan = plan_for(d, observed(h, seen(d.agents["impl"], host_id="old" + "0" * 61)))
    act = by_id(plan)["agent:impl"]
    assert act.op == "replace"
    assert act.cause == "joined to a holder container of box that no longer exists"
    assert act.depends_on == ()


def test_duplicate_holders_keep_the_one_agents_are_joined_to():
    d = desired(host("box"), agent("impl", host="box"))
    keep = seen_host(d.hosts["box"], id="k" * 64, created="2026-02-01T00:00:00Z")
    dup = seen_host(d.hosts["box"], id="d" * 64, created="2026-01-01T00:00:00Z")
    plan = plan_for(d, observed(dup, keep, seen(d.agents["impl"], host_id=keep.id)))
    assert_graph_ok(plan)
    assert ops(plan) == {f"host:box:destroy:{'d' * 12}": "destroy"}
    assert plan.actions[0].cause == "duplicate holder container"


def test_agent_joined_to_a_duplicate_holder_is_moved_to_the_kept_one():
    d = desired(host("box"), agent("impl", host="box"))
    keep = seen_host(d.hosts["box"], id="k" * 64, created="2026-02-01T00:00:00Z")
    dup = seen_host(d.hosts["box"], id="d" * 64, created="2026-01-01T00:00:00Z")
    plan = plan_for(d, observed(keep, dup, seen(d.agents["impl"], host_id=dup.id)))
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert acts["agent:impl"].op == "replace"
    assert "agent:impl" in acts[f"host:box:destroy:{'d' * 12}"].depends_on


def test_dead_holder_is_replaced():
    d = desired(host("box"), agent("impl", host="box"))
    h = seen_host(d.hosts["box"], state="dead")
    acts = by_id(plan_for(d, observed(h, seen(d.agents["impl"], host_id=h.id))))
    assert acts["host:box"].op == "replace"
    assert acts["agent:impl"].op == "replace"


def test_no_prune_keeps_the_host_of_agents_kept():
    d = desired(host("box"), agent("web"))
    h = seen_host(d.hosts["box"])
    plan = plan_for(d, observed(h, seen(agent("impl", host="box"), host_id=h.id), seen(d.agents["web"])), prune=False)
    assert plan.empty


def test_agent_moved_from_private_to_shared_host_waits_for_the_host():
    d = desired(host("box"), agent("impl", host="box"))
    plan = plan_for(d, observed(seen(agent("impl"))))
    acts = by_id(plan)
    assert acts["host:box"].op == "create"
    assert acts["agent:impl"].op == "replace" and "host" in [c.key for c in acts["agent:impl"].changes]
    assert acts["agent:impl"].depends_on == ("host:box",)


# --------------------------------------------------------------------------- targets


def test_targets_limit_the_plan_to_named_agents_and_their_host():
    d = desired(host("box"), agent("impl", host="box"), agent("web"), agent("api"))
    o = observed(seen(agent("old")))
    plan = plan_for(d, o, targets=frozenset({"impl"}))
    assert ops(plan) == {"host:box": "create", "agent:impl": "join"}


def test_targets_do_not_destroy_other_orphans_but_can_name_one():
    d = desired(agent("web"))
    old = seen(agent("old"), id="o" * 64)
    other = seen(agent("other"), id="x" * 64)
    h = seen_host(host("gone"))
    plan = plan_for(d, observed(seen(d.agents["web"]), old, other, h), targets=frozenset({"old"}))
    assert ops(plan) == {f"agent:old:destroy:{'o' * 12}": "destroy"}


def test_targets_take_along_neighbours_stranded_by_a_recreated_host():
    """Targeting one agent whose shared host must be replaced (its workspace changed)
    replaces the other agents already on that host too: left alone they would
    stay joined to a holder that no longer exists. A host being created for the
    first time strands nobody, so untargeted agents without containers stay out."""
    before = desired(host("pod"), agent("a1", host="pod", ports={"web": 3000}), agent("a2", host="pod"))
    h = seen_host(before.hosts["pod"])
    a1 = seen(before.agents["a1"], host_id=h.id)
    a2 = seen(before.agents["a2"], host_id=h.id)
    after = desired(host("pod", workspace="/elsewhere"), agent("a1", host="pod", ports={"web": 3000}), agent("a2", host="pod"))
    plan = plan_for(after, observed(h, a1, a2), targets=frozenset({"a1"}))
    assert ops(plan) == {"host:pod": "replace", "agent:a1": "replace", "agent:a2": "replace"}
    assert by_id(plan)["agent:a2"].cause == "host pod re-created"


def test_a_stopped_routing_proxy_is_a_reason_to_route_again():
    """After a reboot the route table is intact but no proxy serves it: apply
    must not say "up to date" while the URLs are dead."""
    d = desired(agent("web", ports={"web": 3000}))
    running = seen(d.agents["web"])
    routes = tuple(r.model_dump() for r in __import__("reconciler.routing.table", fromlist=["x"]).routes_for(d, observed(running)))
    assert plan_for(d, observed(running, routes=routes)).empty
    down = observed(running, routes=routes).model_copy(update={"proxy_running": False})
    plan = plan_for(d, down)
    assert ops(plan, routes=True) == {"route:routes": "route"}
    assert by_id(plan)["route:routes"].cause == "routing proxy not running"


# --------------------------------------------------------------------------- ownership


def test_only_observed_records_are_ever_touched():
    """Observe reports only this fleet's labelled resources; every action that
    touches something existing carries the observed record it came from."""
    d = desired(host("box"), agent("impl", host="box"), agent("web", env={"A": "2"}))
    h = seen_host(d.hosts["box"])
    o = observed(h, seen(agent("web", env={"A": "1"})), seen(agent("old")))
    known = {r.id for r in o.agents} | {r.id for r in o.hosts}
    plan = plan_for(d, o)
    for act in plan.actions:
        if act.op in ("replace", "start", "restart", "stop", "destroy"):
            record = act.observed_agent or act.observed_host
            assert record is not None and record.id in known, act.id


# --------------------------------------------------------------------------- destroy plan


def test_reconcile_destroy_orders_agents_before_hosts():
    h = seen_host(host("box"), id="h" * 64)
    a1 = seen(agent("impl", host="box"), id="1" * 64, host_id=h.id)
    a2 = seen(agent("web"), id="2" * 64)
    h2 = seen_host(host("empty"), id="e" * 64)
    plan = reconcile_destroy(observed(h, a1, a2, h2))
    assert_graph_ok(plan)
    acts = by_id(plan)
    assert all(a.op == "destroy" for a in plan.actions)
    assert {a.id for a in plan.actions if a.kind != "route"} == {
        f"agent:impl:destroy:{'1' * 12}", f"agent:web:destroy:{'2' * 12}",
        f"host:box:destroy:{'h' * 12}", f"host:empty:destroy:{'e' * 12}",
    }
    assert acts[f"host:box:destroy:{'h' * 12}"].depends_on == (f"agent:impl:destroy:{'1' * 12}",)
    assert acts[f"host:empty:destroy:{'e' * 12}"].depends_on == ()
    order = [a.id for a in plan.actions]
    assert order.index(f"agent:impl:destroy:{'1' * 12}") < order.index(f"host:box:destroy:{'h' * 12}")
    assert {a.cause for a in plan.actions if a.kind != "route"} == {"fleet destroy"}


def test_reconcile_destroy_of_nothing_is_empty():
    plan = reconcile_destroy(observed())
    assert plan.empty and plan.summary() == "fleet demo is up to date"


# --------------------------------------------------------------------------- summary wording


def test_summary_counts_each_op_in_a_stable_order():
    d = desired(
        host("box"), agent("a", host="box"),
        agent("b", env={"X": "2"}), agent("c"), agent("d"), agent("e", enabled=False),
    )
    o = observed(
        seen(agent("b", env={"X": "1"})), seen(d.agents["c"], state="exited", exit_code=1),
        seen(d.agents["d"]), seen(agent("e")), seen(agent("gone")),
    )
    plan = plan_for(d, o)
    assert plan.summary() == "Plan for demo: 1 to create, 1 to join, 1 to replace, 1 to start, 1 to stop, 1 to destroy, 1 unchanged"
    assert plan.counts()["replace"] == 1


# --------------------------------------------------------------------------- helpers


def test_flatten_and_changed_keys():
    assert flatten({"env": {"A": "1", "B": {"C": 2}}, "ports": {}, "command": ["a", "b"]}) == {
        "env.A": "1", "env.B.C": 2, "ports": {}, "command": ["a", "b"],
    }
    changes = changed_keys({"env": {"A": "1"}, "image": "x"}, {"env": {"A": "2"}, "image": "x"})
    assert [(c.key, c.before, c.after) for c in changes] == [("env.A", "1", "2")]
    assert changed_keys({}, {}) == ()
