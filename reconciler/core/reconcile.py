"""Reconcile: the pure function (Desired, Observed) -> Plan.

Every decision fleet makes lives here: what to create, join, replace, start,
restart, stop or destroy, and why. No I/O: it reads two frozen models and returns
a third, so it is tested with hand-built states and no engine.

Ordering is expressed as dependencies: a shared host before the agents joining it,
agents before routes, agent destroys before their host's destroy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from reconciler.core.model import Desired, DesiredAgent, Observed, ObservedAgent, ObservedHost
from reconciler.core.plan import Action, Change, Plan

HOST_NOUN = {"docker": "holder container", "modal": "sandbox"}
# A holder made by an older fleet publishes its agents' ports; it is replaced once.
MIGRATE_PUBLISHED = (
    "holder publishes its agents' ports (older fleet): re-created once without them, "
    "so agents with ports join and leave without restarting their neighbours"
)

# A sandbox made by an older fleet tunnels each agent port; it is replaced once.
MIGRATE_TUNNELS = (
    "sandbox has one tunnel per agent port (older fleet): re-created once with one tunnel to a port router, "
    "so agents with ports join and leave without restarting their neighbours"
)


@dataclass(frozen=True)
class Options:
    prune: bool = True  # destroy what fleet.yaml no longer names
    targets: frozenset[str] = frozenset()  # limit to these agents (and what they need)
    replace: frozenset[str] = frozenset()  # force-replace these agents


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"env": {"TZ": "UTC"}} -> {"env.TZ": "UTC"}; lists stay whole values."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data} if prefix else {}


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> tuple[Change, ...]:
    """The dotted keys whose value differs, with their before and after."""
    b, a = flatten(before), flatten(after)
    out = []
    for key in sorted(set(b) | set(a)):
        if b.get(key) != a.get(key):
            out.append(Change(key=key, before=b.get(key), after=a.get(key)))
    return tuple(out)


def _spec_cause(changes: tuple[Change, ...]) -> str:
    if not changes:
        return "spec changed"
    keys = [c.key for c in changes]
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    return f"spec changed: {shown}"


def _exit_cause(obs: ObservedAgent | ObservedHost) -> str:
    code = getattr(obs, "exit_code", None)
    if obs.state == "created":
        return "created but never started"
    if obs.state == "exited" and code is not None:
        return f"exited {code}"
    return obs.state


def _pick(candidates: list, want_hash: str) -> tuple[Any, list]:
    """Keep the best of several records for one name (a crash can leave
    duplicates, an upgrade an old-named one): today's name first, then the one
    with the wanted hash that runs, else the newest."""
    ranked = sorted(
        candidates,
        key=lambda r: (r.legacy_name is None, r.spec_hash == want_hash, r.state == "running", r.created or ""),
        reverse=True,
    )
    return ranked[0], ranked[1:]


@dataclass
class _Builder:
    desired: Desired
    observed: Observed
    opts: Options
    actions: list[Action] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # shared host name -> the observed record kept for it (others are duplicates)
    kept_hosts: dict[str, ObservedHost] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # left stopped after `fleet stop`

    def add(self, **kw: Any) -> Action:
        action = Action(**kw)
        self.actions.append(action)
        return action

    def in_scope(self, agent: str) -> bool:
        return not self.opts.targets or agent in self.opts.targets

    def holds_kept_agents(self, host: ObservedHost) -> bool:
        """With --no-prune, agents fleet.yaml no longer names are kept, and so is
        the host they are joined to."""
        return not self.opts.prune and any(
            a.host == host.name and a.name not in self.desired.agents and a.host_id in (None, host.id)
            for a in self.observed.agents
        )

    def host_in_scope(self, host: str) -> bool:
        if not self.opts.targets:
            return True
        return any(a.host == host for a in self.desired.agents.values() if a.name in self.opts.targets)


def reconcile(desired: Desired, observed: Observed, options: Options | None = None) -> Plan:
    """Compare what fleet.yaml asks for with what exists; return the plan."""
    opts = options or Options()
    b = _Builder(desired, observed, opts)
    host_actions = _reconcile_hosts(b)
    agent_destroys = _reconcile_agents(b, host_actions)
    _destroy_orphan_hosts(b, agent_destroys)
    _first_messages(b)
    _routes(b)
    _unused_images(b)
    return Plan(
        fleet=desired.fleet,
        actions=tuple(b.actions),
        unchanged=tuple(sorted(b.unchanged)),
        stopped=tuple(sorted(b.stopped)),
        spec_hash=desired.spec_hash,
        observed_fingerprint=observed.fingerprint(),
        warnings=observed.warnings,
    )


def _legacy_cause(obs: ObservedAgent | ObservedHost) -> str:
    return f"named {obs.legacy_name} by an older fleet version; re-created under its unambiguous name"


def _caps_note(agent: DesiredAgent) -> str:
    """Capabilities fleet gives back on request are said in the plan."""
    if not agent.capabilities:
        return ""
    s = "ies" if len(agent.capabilities) > 1 else "y"
    return f"; with capabilit{s} {', '.join(agent.capabilities)}"


def _group(records: Iterable, key: str = "name") -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(getattr(r, key), []).append(r)
    return out


def _reconcile_hosts(b: _Builder) -> dict[str, Action]:
    """Shared hosts: create, replace or start the holder/sandbox of each host that
    has enabled agents; destroy hosts with none. Returns host name -> action."""
    observed = _group(b.observed.hosts)
    out: dict[str, Action] = {}
    for name, host in sorted(b.desired.hosts.items()):
        found = observed.get(name, [])
        if not b.host_in_scope(name):
            continue
        wanted = [a for a in b.desired.agents_on(name) if a.enabled]
        if not wanted:
            for obs in found:  # a declared host with no agents runs nothing
                if b.holds_kept_agents(obs):
                    continue
                b.add(
                    id=f"host:{name}:destroy:{obs.id[:12]}", op="destroy", kind="host", name=name,
                    provider=obs.provider, cause="no enabled agents on this host", observed_host=obs,
                )
            continue
        if not found:
            out[name] = b.add(
                id=f"host:{name}", op="create", kind="host", name=name, provider=host.provider,
                cause=f"no {HOST_NOUN[host.provider]}", desired_host=host,
            )
            continue
        keep, extras = _pick(found, host.spec_hash)
        b.kept_hosts[name] = keep
        for obs in extras:
            if b.holds_kept_agents(obs):
                continue
            b.add(
                id=f"host:{name}:destroy:{obs.id[:12]}", op="destroy", kind="host", name=name,
                provider=obs.provider, cause=f"duplicate {HOST_NOUN[obs.provider]}", observed_host=obs,
            )
        if keep.spec_hash != host.spec_hash or keep.provider != host.provider or keep.state == "dead" or keep.legacy_name:
            changes = changed_keys(keep.spec, host.spec())
            if keep.legacy_name:
                cause = _legacy_cause(keep)
            else:
                cause = _spec_cause(changes) if keep.spec_hash != host.spec_hash else f"{HOST_NOUN[keep.provider]} {keep.state}"
                if host.provider == keep.provider == "docker" and [c.key for c in changes] == ["ports"] and not host.spec()["ports"]:
                    cause = MIGRATE_PUBLISHED
                elif host.provider == keep.provider == "modal" and "router" in {c.key for c in changes}:
                    cause = MIGRATE_TUNNELS
            out[name] = b.add(
                id=f"host:{name}", op="replace", kind="host", name=name, provider=host.provider,
                cause=cause, changes=changes, desired_host=host, observed_host=keep,
            )
        elif keep.state != "running":
            out[name] = b.add(
                id=f"host:{name}", op="start", kind="host", name=name, provider=host.provider,
                cause=f"{HOST_NOUN[keep.provider]} {_exit_cause(keep)}", desired_host=host, observed_host=keep,
            )
        else:
            b.unchanged.append(f"host:{name}")
    return out


def _reconcile_agents(b: _Builder, host_actions: dict[str, Action]) -> dict[str, list[str]]:
    """Every agent: create/join, replace, start, restart, stop or leave alone;
    destroy agents that fleet.yaml no longer names. Returns, per observed shared
    host, the ids of the agent destroys its own destroy must wait for."""
    observed = _group(b.observed.agents)
    waits: dict[str, list[str]] = {}

    def destroy(obs: ObservedAgent, cause: str) -> None:
        act = b.add(
            id=f"agent:{obs.name}:destroy:{obs.id[:12]}", op="destroy", kind="agent", name=obs.name,
            host=obs.host, provider=obs.provider, cause=cause, observed_agent=obs,
        )
        if obs.host:
            waits.setdefault(obs.host, []).append(act.id)

    for name, agent in sorted(b.desired.agents.items()):
        host_act = host_actions.get(agent.host) if agent.host else None
        found = observed.get(name, [])
        # a targeted agent's host being re-created or restarted takes the other
        # agents already on it along: they would stay joined to a holder that is gone
        stranded = bool(found) and host_act is not None and host_act.op in ("create", "replace", "start")
        if not b.in_scope(name) and not stranded:
            continue
        deps = (host_act.id,) if host_act else ()
        common = dict(kind="agent", name=name, host=agent.host, provider=agent.provider, desired_agent=agent)
        if not agent.enabled:
            if found:
                keep, extras = _pick(found, agent.spec_hash)
                for obs in extras:
                    destroy(obs, "duplicate container")
                if keep.state in ("running", "restarting", "paused"):
                    b.add(id=f"agent:{name}", op="stop", cause="enabled: false", observed_agent=keep, **common)
                else:
                    b.unchanged.append(f"agent:{name}")
            continue
        if not found:
            if agent.host:
                b.add(id=f"agent:{name}", op="join", cause=f"not on host {agent.host}{_caps_note(agent)}", depends_on=deps, **common)
            else:
                b.add(id=f"agent:{name}", op="create", cause=f"no container{_caps_note(agent)}", **common)
            continue
        keep, extras = _pick(found, agent.spec_hash)
        for obs in extras:
            destroy(obs, "duplicate container")
        _reconcile_one(b, agent, keep, host_act, b.kept_hosts.get(agent.host) if agent.host else None, common, deps)

    if b.opts.prune:
        for name, records in sorted(observed.items()):
            if name in b.desired.agents:
                continue
            if b.opts.targets and name not in b.opts.targets:
                continue
            for obs in records:
                destroy(obs, "not in fleet.yaml")
    return waits


def _reconcile_one(
    b: _Builder,
    agent: DesiredAgent,
    obs: ObservedAgent,
    host_act: Action | None,
    obs_host: ObservedHost | None,
    common: dict[str, Any],
    deps: tuple[str, ...],
) -> None:
    name = agent.name
    changes = changed_keys(obs.spec, agent.spec())
    rejoin = host_act is not None and host_act.op in ("create", "replace") or bool(
        agent.host and obs_host is not None and obs.host_id and obs.host_id != obs_host.id
    )
    if name not in b.opts.replace and not rejoin and user_stopped(agent, obs):
        b.unchanged.append(f"agent:{name}")
        b.stopped.append(name)
        return
    if name in b.opts.replace:
        cause = "replace requested (--replace)"
    elif obs.legacy_name:
        cause = _legacy_cause(obs)
    elif obs.spec_hash != agent.spec_hash:
        cause = _spec_cause(changes)
    elif host_act is not None and host_act.op in ("create", "replace"):
        cause = f"host {agent.host} re-created"
    elif agent.host and obs_host is not None and obs.host_id and obs.host_id != obs_host.id:
        cause = f"joined to a {HOST_NOUN[obs.provider]} of {agent.host} that no longer exists"
    elif obs.state == "dead":  # Docker cannot start a dead container
        cause = "container dead"
    else:
        cause = None
    if cause is not None:
        b.add(id=f"agent:{name}", op="replace", cause=cause, changes=changes, observed_agent=obs, depends_on=deps, **common)
        return
    if host_act is not None and host_act.op == "start":
        b.add(id=f"agent:{name}", op="restart", cause=f"host {agent.host} restarted", observed_agent=obs, depends_on=deps, **common)
        return
    if obs.state in ("exited", "created"):
        finished = (agent.restart == "never" and obs.state != "created") or (
            agent.restart == "on-failure" and obs.state == "exited" and obs.exit_code == 0
        )
        if not finished:
            b.add(id=f"agent:{name}", op="start", cause=_exit_cause(obs), observed_agent=obs, depends_on=deps, **common)
            return
    b.unchanged.append(f"agent:{name}")


def user_stopped(agent: DesiredAgent, obs: ObservedAgent) -> bool:
    """A person stopped this container with `fleet stop` and fleet.yaml's spec of
    the agent is what it was then: it stays stopped until `fleet start`. Found
    running again (started by hand, the engine restarted), it is left running."""
    return (
        obs.stop_spec_hash is not None
        and obs.stop_spec_hash == agent.spec_hash
        and obs.state not in ("running", "restarting", "paused")
    )


def _destroy_orphan_hosts(b: _Builder, waits: dict[str, list[str]]) -> None:
    """Observed hosts fleet.yaml no longer declares go after their agents."""
    if b.opts.prune and not b.opts.targets:
        for obs in sorted(b.observed.hosts, key=lambda h: h.name):
            if obs.name in b.desired.hosts:
                continue
            b.add(
                id=f"host:{obs.name}:destroy:{obs.id[:12]}", op="destroy", kind="host", name=obs.name,
                provider=obs.provider, cause="not in fleet.yaml", observed_host=obs,
            )
    # A host goes only after every container on it has left: destroyed, replaced
    # elsewhere (an agent moved off it) or stopped (disabled).
    leaving: dict[str, list[str]] = {}
    for act in b.actions:
        obs = act.observed_agent
        if act.kind == "agent" and act.op in ("destroy", "replace", "stop") and obs is not None and obs.host:
            leaving.setdefault(obs.host, []).append(act.id)
    # A host re-created in place (replace) also goes first: the agents leaving it
    # (removed or stopped) do so before, never while its sandbox is snapshotted
    # or its holder removed (its re-joining agents already wait for it).
    ops = {a.id: a.op for a in b.actions}
    gone_first = {host: [i for i in ids if ops[i] in ("destroy", "stop")] for host, ids in leaving.items()}
    fixed = []
    for act in b.actions:
        if act.kind == "host" and act.op == "destroy" and leaving.get(act.name):
            act = act.model_copy(update={"depends_on": tuple(leaving[act.name])})
        elif act.kind == "host" and act.op == "replace" and gone_first.get(act.name):
            act = act.model_copy(update={"depends_on": tuple(act.depends_on) + tuple(gone_first[act.name])})
        fixed.append(act)
    b.actions[:] = fixed


def _first_messages(b: _Builder) -> None:
    """An agent's `message:` is typed in once, right after its container first
    starts: after a create/join/replace, or later if that delivery never happened
    (an apply killed in between, an agent that was not running)."""
    agent_acts = {a.name: a for a in b.actions if a.kind == "agent" and a.id == f"agent:{a.name}"}
    observed = _group(b.observed.agents)
    for name, agent in sorted(b.desired.agents.items()):
        if not agent.message or not agent.enabled or not b.in_scope(name):
            continue
        act = agent_acts.get(name)
        obs = _pick(observed[name], agent.spec_hash)[0] if observed.get(name) else None
        common = dict(id=f"message:{name}", op="message", kind="agent", name=name, host=agent.host,
                      provider=agent.provider, desired_agent=agent)
        if act is not None and act.op in ("create", "join", "replace"):
            b.add(cause="first message", depends_on=(act.id,), **common)
        elif obs is not None and obs.message_pending and (act is not None and act.op in ("start", "restart")):
            b.add(cause="first message not delivered yet", depends_on=(act.id,), observed_agent=obs, **common)
        elif obs is not None and obs.message_pending and act is None and obs.state == "running":
            b.add(cause="first message not delivered yet", observed_agent=obs, **common)


ROUTE_OPS = {"create": "added", "join": "added", "replace": "replaced", "start": "started", "restart": "restarted",
             "destroy": "removed"}


def _routes(b: _Builder) -> None:
    """One route action per apply, only when the route table would change: an
    agent with ports is created, joined, replaced or (re)started (its target
    moves), an agent with routes is destroyed, or the fleet's entry differs from
    what the running agents need (lost, edited, proxy not running). Agents
    without ports coming and going leave the table alone. The cause names the
    agents whose routes change."""
    from reconciler.routing.table import routes_for

    wants_ports = any(a.ports for a in b.desired.agents.values())
    if not wants_ports and b.observed.routes is None:
        return
    current = b.observed.routes or ()
    routed = {r["agent"] for r in current}
    moving: dict[str, str] = {}
    deps: list[str] = []
    for act in b.actions:
        if act.kind != "agent" or act.op not in ROUTE_OPS:
            continue
        d = b.desired.agents.get(act.name)
        has_ports = bool(d and d.ports and d.enabled)
        if act.op == "destroy":
            still_wanted = has_ports and any(
                o.name == act.name and o.id != (act.observed_agent.id if act.observed_agent else None)
                for o in b.observed.agents
            )
            if act.name not in routed or still_wanted and act.name in moving:
                continue
            what = "replaced" if still_wanted else "removed"
        elif has_ports or act.name in routed:
            what = "added" if act.op in ("create", "join") and act.name not in routed else ROUTE_OPS[act.op]
            if not has_ports:
                what = "removed"
        else:
            continue
        moving.setdefault(act.name, what)
        deps.append(act.id)
    if moving:  # and after every host action: a duplicate holder going can move a route too
        deps += [a.id for a in b.actions if a.kind == "host"]
    derived = tuple(r.model_dump() for r in routes_for(b.desired, b.observed))
    key = lambda r: (r["agent"], r["service"])  # noqa: E731
    if moving:
        shown = [f"{n} ({w})" for n, w in sorted(moving.items())]
        cause = "routes of " + ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    elif b.observed.routes is None:
        cause = "no routes for this fleet"
    elif wants_ports and not b.observed.proxy_running:
        cause = "routing proxy not running"
    elif sorted(current, key=key) != sorted(derived, key=key) and (
        _missing_or_moved(current, derived) or _of_gone_agents(current, b.desired, b.observed)
    ):
        cause = "route table out of date"
    else:
        b.unchanged.append("route:routes")
        return
    b.add(id="route:routes", op="route", kind="route", name="routes", cause=cause, depends_on=tuple(deps))


def _image_actions(observed: Observed, remove: list[str], cause: str, after: list[Action]) -> list[Action]:
    waits = tuple(a.id for a in after if a.kind in ("host", "agent"))
    return [
        Action(id=f"image:{ref}:destroy", op="destroy", kind="image", name=ref, provider="docker", cause=cause, depends_on=waits)
        for ref in sorted(remove)
    ]


def _unused_images(b: _Builder) -> None:
    """The fleet's built images that nothing uses once this plan is carried out:
    not fleet.yaml (hosts and agents, enabled or not) and not a container that
    stays. Each edit of a build context makes a new image, so without this they
    pile up. A run limited to some agents (--target) or one that keeps what
    fleet.yaml no longer names (--no-prune) removes none."""
    if not b.observed.images or b.opts.targets or not b.opts.prune:
        return
    keep = {h.image.ref for h in b.desired.hosts.values()} | {a.image.ref for a in b.desired.agents.values()}
    going = {
        (obs.id if obs is not None else None)
        for a in b.actions
        if a.op in ("replace", "destroy")
        for obs in (a.observed_agent, a.observed_host)
    }
    for obs in (*b.observed.agents, *b.observed.hosts):
        if obs.id not in going and isinstance(obs.spec.get("image"), str):
            keep.add(obs.spec["image"])
    unused = [ref for ref in b.observed.images if ref not in keep]
    b.actions.extend(_image_actions(b.observed, unused, "built image no longer used", b.actions))


def _missing_or_moved(current: tuple, derived: tuple) -> bool:
    """Routes of running agents that are absent or point elsewhere. Extra routes
    of agents not running right now are kept on purpose (removed only when gone)."""
    have = {(r["agent"], r["service"]): r for r in current}
    return any(have.get((r["agent"], r["service"])) != r for r in derived)


def _of_gone_agents(current: tuple, desired: Desired, observed: Observed) -> bool:
    """Routes of agents that are gone: neither in fleet.yaml nor running anywhere
    (a route action skipped after a failure left them behind; they answer 502)."""
    present = set(desired.agents) | {a.name for a in observed.agents}
    return any(r["agent"] not in present for r in current)


def reconcile_destroy(observed: Observed, cause: str = "fleet destroy") -> Plan:
    """Everything the fleet owns goes: agents first, then their hosts."""
    actions: list[Action] = []
    waits: dict[str, list[str]] = {}
    for obs in sorted(observed.agents, key=lambda a: a.name):
        act = Action(
            id=f"agent:{obs.name}:destroy:{obs.id[:12]}", op="destroy", kind="agent", name=obs.name,
            host=obs.host, provider=obs.provider, cause=cause, observed_agent=obs,
        )
        actions.append(act)
        if obs.host:
            waits.setdefault(obs.host, []).append(act.id)
    for obs in sorted(observed.hosts, key=lambda h: h.name):
        actions.append(
            Action(
                id=f"host:{obs.name}:destroy:{obs.id[:12]}", op="destroy", kind="host", name=obs.name,
                provider=obs.provider, cause=cause, observed_host=obs, depends_on=tuple(waits.get(obs.name, ())),
            )
        )
    if observed.routes is not None:
        actions.append(
            Action(id="route:routes", op="route", kind="route", name="routes", cause="remove this fleet's routes",
                   depends_on=tuple(a.id for a in actions), route={"remove": True})
        )
    actions.extend(_image_actions(observed, list(observed.images), f"{cause}: an image built for this fleet", actions))
    return Plan(fleet=observed.fleet, actions=tuple(actions), observed_fingerprint=observed.fingerprint(),
                warnings=observed.warnings)


def mass_destroy(plan: Plan, observed: Observed) -> tuple[int, int] | None:
    """(agents destroyed, agents the fleet has) when `plan` destroys more than
    half of the fleet's agents (a save of just `fleet: NAME`), else None. The
    watch loop holds such a plan until it is confirmed. Duplicates and
    replacements do not count: only agents that would be gone afterwards."""
    total = {a.name for a in observed.agents}
    kept = {a.name for a in plan.actions if a.kind == "agent" and a.op != "destroy"}
    kept |= {u.split(":", 1)[1] for u in plan.unchanged if u.startswith("agent:")}
    gone = {a.name for a in plan.actions if a.kind == "agent" and a.op == "destroy"} - kept
    return (len(gone), len(total)) if total and 2 * len(gone) > len(total) else None
