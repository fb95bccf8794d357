"""Property tests for reconcile: random desired and observed states, a plan
applied to a tiny in-memory world, then reconciled again.

The world simulator does what each action asks of a provider (create a running
record with the desired hash, replace with a new id, destroy, start, stop...)
in a dependency order, and checks the preconditions a real engine would
enforce: an agent joins a running holder, a holder goes only once nothing
running is joined to it, nothing acts on a record that is gone.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.model import Desired, Observed, ObservedAgent, ObservedHost
from reconciler.core.plan import Action, Plan
from reconciler.core.reconcile import Options, _pick, reconcile
from reconciler.routing.table import routes_for
from tests.unit.builders import agent, desired, host, seen, seen_host

AGENTS = ["a", "b", "c", "d", "e"]
HOSTS = ["h1", "h2"]
STATES = ["running", "running", "exited", "created", "dead", "paused", "restarting"]
TIMES = ["2026-01-01", "2026-01-02", "2026-01-03"]
SETTINGS = settings(
    max_examples=200,
    database=None,  # failures print their example; no .hypothesis directory in the tree
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- strategies


@st.composite
def desired_states(draw) -> Desired:
    hosts = draw(st.lists(st.sampled_from(HOSTS), unique=True, max_size=2))
    items: list[Any] = [host(h, provider=draw(st.sampled_from(["docker", "docker", "modal"]))) for h in hosts]
    providers = {h.name: h.provider for h in items}
    names = draw(st.lists(st.sampled_from(AGENTS), unique=True, max_size=5))
    for i, name in enumerate(names):
        on = draw(st.sampled_from([None, *hosts]))
        n_ports = draw(st.integers(0, 2))
        items.append(
            agent(
                name,
                host=on,
                provider=providers.get(on, "docker") if on else "docker",
                env=draw(st.dictionaries(st.sampled_from(["TZ", "A", "B"]), st.sampled_from(["1", "2"]), max_size=2)),
                # unique per host by construction, as load guarantees
                ports={f"s{j}": 3000 + 10 * i + j for j in range(n_ports)},
                restart=draw(st.sampled_from(["always", "on-failure", "never"])),
                enabled=draw(st.booleans()),
                message=draw(st.sampled_from([None, "hello"])),
            )
        )
    return desired(*items)


@st.composite
def observed_states(draw, d: Desired) -> Observed:
    ids = itertools.count(1)
    hosts: list[ObservedHost] = []
    for name in HOSTS + ["h3"]:
        want = d.hosts.get(name) or host(name)
        for _ in range(draw(st.integers(0, 2))):
            variant = draw(st.sampled_from(["same", "ports", "image"]))
            changes: dict[str, Any] = {}
            if variant == "ports":
                changes["ports"] = (9999,)
            elif variant == "image":
                changes["image"] = want.image.model_copy(update={"ref": "img:old"})
            hosts.append(
                seen_host(want, id=f"h{next(ids):011d}", state=draw(st.sampled_from(STATES)),
                          created=draw(st.sampled_from(TIMES)), **changes)
            )
    agents: list[ObservedAgent] = []
    for name in AGENTS + ["x"]:
        want = d.agents.get(name) or agent(name, host=draw(st.sampled_from([None, *HOSTS])))
        for _ in range(draw(st.integers(0, 2))):
            changes = {}
            if draw(st.booleans()):
                changes["env"] = {"OLD": "1"}
            if draw(st.integers(0, 4)) == 0:
                changes["host"] = draw(st.sampled_from([None, *HOSTS]))
            on = changes.get("host", want.host)
            candidates = [h.id for h in hosts if h.name == on] if on else []
            host_id = draw(st.sampled_from([None, "stale", *candidates])) if on else None
            state = draw(st.sampled_from(STATES))
            agents.append(
                seen(
                    want,
                    id=f"a{next(ids):011d}",
                    state=state,
                    exit_code=draw(st.sampled_from([0, 1, 137])) if state == "exited" else None,
                    host_id=host_id,
                    created=draw(st.sampled_from(TIMES)),
                    message_pending=draw(st.booleans()),
                    **changes,
                )
            )
    routes = draw(st.sampled_from([None, ()]))
    return Observed(fleet=d.fleet, hosts=tuple(hosts), agents=tuple(agents), routes=routes)


@st.composite
def worlds(draw):
    d = draw(desired_states())
    o = draw(observed_states(d))
    prune = draw(st.sampled_from([True, True, False]))
    seed = draw(st.integers(0, 2**16))
    return d, o, Options(prune=prune), seed


# --------------------------------------------------------------------------- the world


class World:
    """An in-memory engine holding ObservedHost/ObservedAgent records."""

    def __init__(self, d: Desired, o: Observed, plan: Plan):
        self.d = d
        self.hosts: dict[str, ObservedHost] = {h.id: h for h in o.hosts}
        self.agents: dict[str, ObservedAgent] = {a.id: a for a in o.agents}
        self.routes = o.routes
        self.ids = itertools.count(1)
        self.doomed = {
            a.observed_host.id for a in plan.actions if a.kind == "host" and a.op in ("destroy", "replace") and a.observed_host
        }

    def observed(self) -> Observed:
        return Observed(fleet=self.d.fleet, hosts=tuple(self.hosts.values()), agents=tuple(self.agents.values()),
                        routes=self.routes)

    def _holder(self, name: str) -> ObservedHost:
        """The holder an agent joins: Docker joins by container name, which only
        one container has; here the one reconcile keeps (duplicates that stay,
        under --no-prune, are those with kept agents on them)."""
        live = [h for h in self.hosts.values() if h.name == name and h.id not in self.doomed]
        assert live, f"host {name}: no holder to join"
        holder, _ = _pick(live, self.d.hosts[name].spec_hash)
        assert holder.state == "running", f"host {name} is {holder.state}"
        return holder

    def _new_agent(self, act: Action) -> None:
        a = act.desired_agent
        assert a is not None
        host_id = self._holder(a.host).id if a.host else None
        rid = f"n{next(self.ids):011d}"
        self.agents[rid] = seen(a, id=rid, state="running", host_id=host_id, created="2027-01-01",
                                message_pending=bool(a.message))

    def _new_host(self, act: Action) -> None:
        h = act.desired_host
        assert h is not None
        rid = f"m{next(self.ids):011d}"
        self.hosts[rid] = seen_host(h, id=rid, state="running", created="2027-01-01")

    def apply(self, act: Action) -> None:
        if act.kind == "route":
            self.routes = tuple(r.model_dump() for r in routes_for(self.d, self.observed()))
            return
        if act.op == "message":
            current = [r for r in self.agents.values() if r.name == act.name and r.state == "running"]
            assert current, f"message for {act.name}, which is not running"
            for r in current:
                self.agents[r.id] = r.model_copy(update={"message_pending": False})
            return
        if act.kind in ("image", "workspace", "volume"):  # side effects beside hosts and agents (effects_hosts)
            return
        if act.kind == "host":
            if act.op == "snapshot":  # before the host goes, never after
                assert act.observed_host.id in self.hosts, f"{act.id}: snapshot of a host already gone"
            elif act.op == "create":
                assert not [h for h in self.hosts.values() if h.name == act.name and h.id not in self.doomed]
                self._new_host(act)
            elif act.op == "replace":
                assert self.hosts.pop(act.observed_host.id, None) is not None
                self._new_host(act)
            elif act.op == "start":
                h = self.hosts[act.observed_host.id]
                assert h.state != "dead", f"{act.id}: a dead container cannot be started"
                self.hosts[h.id] = h.model_copy(update={"state": "running"})
            elif act.op == "destroy":
                h = self.hosts.pop(act.observed_host.id, None)
                assert h is not None, f"{act.id}: already gone"
                joined = [a for a in self.agents.values() if a.host_id == h.id and a.state == "running"]
                assert not joined, f"{act.id}: agents still running on it: {[a.name for a in joined]}"
            else:
                raise AssertionError(f"unknown host op {act.op}")
            return
        assert act.kind == "agent", act
        if act.op in ("create", "join"):
            assert not [r for r in self.agents.values() if r.name == act.name and r.state == "running"], act.id
            self._new_agent(act)
        elif act.op == "replace":
            assert self.agents.pop(act.observed_agent.id, None) is not None, f"{act.id}: already gone"
            self._new_agent(act)
        elif act.op in ("start", "restart"):
            r = self.agents[act.observed_agent.id]
            assert r.state != "dead", f"{act.id}: a dead container cannot be started"
            if r.host:
                self._holder(r.host)
            self.agents[r.id] = r.model_copy(update={"state": "running", "exit_code": None})
        elif act.op == "stop":
            r = self.agents[act.observed_agent.id]
            self.agents[r.id] = r.model_copy(update={"state": "exited", "exit_code": 0})
        elif act.op == "destroy":
            assert self.agents.pop(act.observed_agent.id, None) is not None, f"{act.id}: already gone"
        else:
            raise AssertionError(f"unknown agent op {act.op}")


def topological(plan: Plan, rng: random.Random) -> list[Action]:
    """A random order that respects depends_on; fails on a cycle or unknown id."""
    by_id = {a.id: a for a in plan.actions}
    assert len(by_id) == len(plan.actions), "duplicate action ids"
    waiting = {a.id: set(a.depends_on) for a in plan.actions}
    for aid, deps in waiting.items():
        assert deps <= set(by_id), f"{aid} depends on missing {deps - set(by_id)}"
    order: list[Action] = []
    while waiting:
        ready = sorted(aid for aid, deps in waiting.items() if not deps)
        assert ready, f"dependency cycle among {sorted(waiting)}"
        aid = rng.choice(ready)
        order.append(by_id[aid])
        del waiting[aid]
        for deps in waiting.values():
            deps.discard(aid)
    return order


def converge(d: Desired, o: Observed, opts: Options, seed: int) -> tuple[Plan, World]:
    plan = reconcile(d, o, opts)
    world = World(d, o, plan)
    for act in topological(plan, random.Random(seed)):
        world.apply(act)
    return plan, world


# --------------------------------------------------------------------------- properties


@SETTINGS
@given(worlds())
def test_applying_the_plan_yields_the_desired_world_and_then_an_empty_plan(case):
    d, o, opts, seed = case
    _, world = converge(d, o, opts, seed)
    assert_is_desired(d, world, opts)
    again = reconcile(d, world.observed(), opts)
    assert again.empty, [(a.id, a.op, a.cause) for a in again.actions]


def assert_is_desired(d: Desired, world: World, opts: Options) -> None:
    records = defaultdict(list)
    for r in world.agents.values():
        records[r.name].append(r)
    for name, a in d.agents.items():
        if not a.enabled:
            assert all(r.state != "running" for r in records[name]), name
            assert len(records[name]) <= 1, name
            continue
        assert len(records[name]) == 1, (name, records[name])
        r = records[name][0]
        assert r.spec_hash == a.spec_hash, name
        finished = r.state == "exited" and (a.restart == "never" or (a.restart == "on-failure" and r.exit_code == 0))
        assert r.state in ("running", "paused", "restarting") or finished, (name, r.state)
        if a.host:
            holders = [h for h in world.hosts.values() if h.name == a.host]
            assert len(holders) == 1 or not opts.prune
            holder, _ = _pick(holders, d.hosts[a.host].spec_hash)
            assert r.host_id in (None, holder.id), (name, r.host_id)
            if r.state == "running":
                assert holder.state == "running"
    if opts.prune:
        assert set(records) <= set(d.agents)
    for name, h in d.hosts.items():
        live = [x for x in world.hosts.values() if x.name == name]
        if any(a.enabled for a in d.agents_on(name)):
            assert len(live) == 1 or not opts.prune
            kept, _ = _pick(live, h.spec_hash)
            assert kept.spec_hash == h.spec_hash and kept.state in ("running", "restarting", "paused")


@SETTINGS
@given(worlds())
def test_plan_graph_is_well_formed_and_destroys_only_what_must_go(case):
    d, o, opts, _ = case
    plan = reconcile(d, o, opts)
    topological(plan, random.Random(0))  # unique ids, known dependencies, no cycle
    for act in plan.actions:
        if act.op != "destroy":
            continue
        if act.kind == "agent" and act.name in d.agents:
            assert act.cause == "duplicate container", (act.id, act.cause)
        if act.kind == "host" and act.name in d.hosts:
            enabled = [a for a in d.agents_on(act.name) if a.enabled]
            assert act.cause.startswith("duplicate") or not enabled, (act.id, act.cause)
        if not opts.prune:
            assert act.name in d.agents or act.name in d.hosts, act.id
    # every host action comes before the agents that need it
    for act in plan.actions:
        if act.kind == "agent" and act.op in ("join", "replace", "restart") and act.host:
            host_act = next((h for h in plan.actions if h.id == f"host:{act.host}"), None)
            if host_act is not None and host_act.op in ("create", "replace", "start"):
                assert host_act.id in act.depends_on, act.id
