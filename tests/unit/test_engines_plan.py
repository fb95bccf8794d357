"""Engines in the pure stages: what `engine:` does to specs, provider keys and
plans, and how an engine that could not be observed is planned around (nothing
created, replaced, started or removed there, nor moved to or from it)."""

from __future__ import annotations

import json

from reconciler.core.model import Route, provider_key, split_key
from reconciler.core.reconcile import reconcile
from reconciler.gitops.output import plan_document
from reconciler.view.render import plan_lines
from tests.gitops.helpers import validate_plan_output
from tests.unit.builders import agent, by_id, desired, host, observed, ops, seen, seen_host

BOX = "ssh://dev@big-box"
BOX_KEY = f"docker@{BOX}"


def test_provider_keys_round_trip():
    assert provider_key("docker", None) == "docker"
    assert provider_key("docker", BOX) == BOX_KEY
    assert split_key(BOX_KEY) == ("docker", BOX)  # the '@' of user@host stays in the engine
    assert split_key("modal") == ("modal", None)


def test_engine_is_in_the_spec_only_when_set():
    plain = agent("a")
    assert "engine" not in plain.spec() and "engine" not in plain.model_dump()
    far = agent("a", engine=BOX)
    assert far.spec()["engine"] == BOX and far.spec_hash != plain.spec_hash
    assert far.key == BOX_KEY and plain.key == "docker"
    h = host("h", engine=BOX)
    assert h.spec()["engine"] == BOX and h.key == BOX_KEY
    assert "engine" not in host("h").spec()
    # dumps and route tables of local things keep their old shape
    r = Route(agent="a", service="web", container_port=3000, target="http://10.0.0.2:3000")
    assert "engine" not in r.model_dump()
    assert Route(agent="a", service="web", container_port=3000, target="http://10.0.0.2:3000", engine=BOX).model_dump()["engine"] == BOX


def test_actions_carry_the_provider_key_and_plans_name_the_engine():
    h = host("box", engine=BOX)
    d = desired(h, agent("impl", host="box", engine=BOX), agent("solo", engine=BOX), agent("loc"))
    plan = reconcile(d, observed())
    acts = by_id(plan)
    assert acts["host:box"].provider == BOX_KEY
    assert acts["agent:impl"].provider == BOX_KEY and acts["agent:solo"].provider == BOX_KEY
    assert acts["agent:loc"].provider == "docker"
    text = "\n".join(line.plain for line in plan_lines(plan))
    assert f"host box (on {BOX})" in text and f"agent solo (on {BOX})" in text
    assert "agent impl (on box)" in text  # an agent of a shared host: named by its host
    doc = plan_document(plan, d)
    validate_plan_output(doc)
    changes = {c["id"]: c for c in doc["changes"]}
    assert changes["host:box"]["provider"] == "docker" and changes["host:box"]["engine"] == BOX
    assert "engine" not in changes["agent:loc"]
    assert "unreachable" not in doc


def test_moving_to_another_engine_replaces_on_the_old_one():
    local = agent("a")
    moved = agent("a", engine=BOX)
    old = seen(local)
    plan = reconcile(desired(moved), observed(old))
    a = by_id(plan)["agent:a"]
    assert a.op == "replace" and a.provider == BOX_KEY and a.observed_agent.key == "docker"
    assert "engine" in {c.key for c in a.changes}


def test_the_network_is_created_on_each_engine_that_lacks_it():
    d = desired(host("box", engine=BOX), agent("impl", host="box", engine=BOX), agent("loc"))
    plan = reconcile(d, observed(networks_missing=(BOX_KEY,)))
    nets = [a for a in plan.actions if a.kind == "network"]
    assert [(n.id, n.provider) for n in nets] == [(f"network:fleet_agents@{BOX}", BOX_KEY)]
    assert nets[0].id in by_id(plan)["host:box"].depends_on
    assert nets[0].id not in by_id(plan)["agent:loc"].depends_on


def test_an_unreachable_engine_gets_no_creates_and_others_converge():
    d = desired(host("box", engine=BOX), agent("impl", host="box", engine=BOX, ports={"web": 3000}), agent("loc"))
    plan = reconcile(d, observed(unreachable={BOX: "ssh: connection refused"}, networks_missing=(BOX_KEY,)))
    assert ops(plan) == {"agent:loc": "create"}
    assert not any(a.provider == BOX_KEY for a in plan.actions)
    assert plan.unreachable == {BOX: "ssh: connection refused"}
    assert any(BOX in w and "agent impl" in w and "host box" in w and "unknown" in w for w in plan.warnings)
    doc = plan_document(plan, d)
    validate_plan_output(doc)
    assert doc["unreachable"] == {BOX: "ssh: connection refused"}
    assert "agent:impl" not in {f"{r['kind']}:{r['name']}" for r in doc["unchanged"]["resources"]}


def test_an_unreachable_engine_is_not_empty_nothing_moves_off_or_onto_it():
    # the agent's copy on the local engine is not replaced while its new engine is unknown
    moved = agent("a", engine=BOX)
    old = seen(agent("a"))
    plan = reconcile(desired(moved, agent("b")), observed(old, seen(agent("b")), unreachable={BOX: "down"}))
    assert plan.empty, [(a.id, a.op) for a in plan.actions]
    # a host moved off it to the local engine is made there (the point of moving it off
    # a dead box); its old copy is removed by the apply after that engine answers again
    back = host("box")
    plan = reconcile(desired(back, agent("x", host="box")), observed(unreachable={BOX: "down"}))
    assert ops(plan) == {"host:box": "create", "agent:x": "join"}


def test_unreachable_engine_keeps_routes_of_its_agents():
    d = desired(host("box", engine=BOX), agent("impl", host="box", engine=BOX, ports={"web": 3000}))
    route = Route(agent="impl", service="web", container_port=3000, target="http://172.18.0.2:3000", engine=BOX)
    plan = reconcile(d, observed(routes=(route,), unreachable={BOX: "down"}))
    assert plan.empty, [(a.id, a.op, a.cause) for a in plan.actions]


def test_dependencies_on_dropped_actions_are_cut():
    h = host("box", engine=BOX)
    d = desired(h, agent("impl", host="box", engine=BOX, ports={"web": 3000}), agent("loc", ports={"web": 3001}))
    plan = reconcile(d, observed(unreachable={BOX: "down"}))
    ids = {a.id for a in plan.actions}
    for a in plan.actions:
        assert set(a.depends_on) <= ids, (a.id, a.depends_on)
    assert json.loads(json.dumps(plan_document(plan, d)))["summary"]["total"] == len(plan.actions)


def test_a_reachable_engine_with_its_things_running_is_up_to_date():
    h = host("box", engine=BOX)
    a = agent("impl", host="box", engine=BOX)
    hs = seen_host(h)
    plan = reconcile(desired(h, a), observed(hs, seen(a, host_id=hs.id)))
    assert plan.empty, [(x.id, x.op, x.cause) for x in plan.actions]


def test_load_gives_agents_their_hosts_engine(tmp_path):
    from reconciler.load.loader import load

    (tmp_path / "app").mkdir()
    f = tmp_path / "fleet.yaml"
    f.write_text(f"""fleet: far
hosts:
  box:
    engine: {BOX}
    image: fleet-base:bookworm
    workspace: ./
agents:
  impl: {{host: box}}
  solo: {{image: fleet-base:bookworm, engine: "ssh://other:2222"}}
  loc: {{image: fleet-base:bookworm}}
""")
    d = load(f)
    assert d.hosts["box"].engine == BOX and d.agents["impl"].engine == BOX
    assert d.agents["solo"].engine == "ssh://other:2222" and d.agents["loc"].engine is None
    # the workspace is uploaded there: the fleet file in it is not bind-mounted read-only
    assert d.hosts["box"].workspace is not None and d.hosts["box"].workspace.read_only == ()
