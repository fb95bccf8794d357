"""Reconcile: the pure function (Desired, Observed) -> Plan.

Every decision fleet makes lives here and in its parts: what to create, join,
replace, start, restart, stop or destroy, and why (this module: hosts, agents,
first messages), when the route table changes (routes.py), which built images
go and what `fleet destroy` does (teardown.py). No I/O: it reads two frozen
models and returns a third, so it is tested with hand-built states and no engine.

Ordering is expressed as dependencies: a shared host before the agents joining it,
agents before routes, agent destroys before their host's destroy.
"""

from __future__ import annotations

from reconciler.core.builder import HOST_NOUN, Builder, Options, changed_keys, flatten, group, pick
from reconciler.core.effects import plan_effects
from reconciler.core.model import Desired, DesiredAgent, Observed, ObservedAgent, ObservedHost, provider_key
from reconciler.core.plan import (
    Action,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    AgentRestart,
    AgentStart,
    AgentStop,
    Change,
    HostCreate,
    HostDestroy,
    HostReplace,
    HostStart,
    MessageSend,
    Plan,
)
from reconciler.core.effects_hosts import add_host_effects
from reconciler.core.routes import plan_routes
from reconciler.core.teardown import mass_destroy, reconcile_destroy, unused_images

_pick = pick  # the name tests/unit/test_properties.py knows

__all__ = [
    "HOST_NOUN", "MIGRATE_PUBLISHED", "MIGRATE_TUNNELS", "Options", "changed_keys", "flatten", "mass_destroy",
    "reconcile", "reconcile_destroy", "user_stopped",
]

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


def reconcile(desired: Desired, observed: Observed, options: Options | None = None) -> Plan:
    """Compare what fleet.yaml asks for with what exists; return the plan."""
    opts = options or Options()
    b = Builder(desired, observed, opts)
    host_actions = _reconcile_hosts(b)
    agent_destroys = _reconcile_agents(b, host_actions)
    _destroy_orphan_hosts(b, agent_destroys)
    b.actions[:] = _leave_unreachable(b.actions, desired, observed)[0]  # before routes and effects count them
    _first_messages(b)
    plan_effects(b)  # grant credentials, the agents' network (effects.py)
    plan_routes(b)
    unused_images(b)
    actions = add_host_effects(b.actions, observed, desired)  # builds, snapshots, workspaces
    actions, unknown = _leave_unreachable(actions, desired, observed)
    return Plan(
        fleet=desired.fleet,
        actions=tuple(actions),
        unchanged=tuple(sorted(n for n in b.unchanged if n not in unknown)),
        stopped=tuple(sorted(b.stopped)),
        spec_hash=desired.spec_hash,
        observed_fingerprint=observed.fingerprint(),
        warnings=observed.warnings + _unreachable_warnings(desired, observed),
        unreachable=observed.unreachable,
    )


def _dark(observed: Observed) -> set[str]:
    """Provider keys of the engines that could not be observed."""
    return {provider_key("docker", e) for e in observed.unreachable}


def _leave_unreachable(actions: list[Action], desired: Desired, observed: Observed) -> tuple[list[Action], set[str]]:
    """An engine that could not be observed is unknown, not empty: nothing is
    created, replaced, started or removed on it, nor is anything moved to or
    from it (the copy elsewhere stays until both sides are known). Actions that
    waited for a dropped one no longer do. Returns the kept actions and the ids
    of resources left unknown (for `unchanged`)."""
    dark = _dark(observed)
    if not dark:
        return actions, set()
    dark_names = {f"agent:{n}" for n, a in desired.agents.items() if a.key in dark}
    dark_names |= {f"host:{n}" for n, h in desired.hosts.items() if h.key in dark}

    def touches(a: Action) -> bool:
        keys = {a.provider}
        for rec in (a.desired_host, a.desired_agent, a.observed_host, a.observed_agent):
            if rec is not None:
                keys.add(rec.key)
        return bool(keys & dark)

    dropped = {a.id for a in actions if touches(a)}
    kept = [a.model_copy(update={"depends_on": tuple(d for d in a.depends_on if d not in dropped)})
            if set(a.depends_on) & dropped else a for a in actions if a.id not in dropped]
    return kept, dark_names


def _unreachable_warnings(desired: Desired, observed: Observed) -> tuple[str, ...]:
    out = []
    for engine, why in sorted(observed.unreachable.items()):
        key = provider_key("docker", engine)
        names = sorted({*(f"host {n}" for n, h in desired.hosts.items() if h.key == key),
                        *(f"agent {n}" for n, a in desired.agents.items() if a.key == key)})
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        out.append(f"engine {engine} unreachable ({why}): "
                   + (f"{shown} unknown; " if names else "what the fleet has there is unknown; ")
                   + "nothing is created, replaced or removed there until it answers")
    return tuple(out)


def _legacy_cause(obs: ObservedAgent | ObservedHost) -> str:
    return f"named {obs.legacy_name} by an older fleet version; re-created under its unambiguous name"


def _caps_note(agent: DesiredAgent) -> str:
    """Capabilities fleet gives back on request are said in the plan."""
    if not agent.capabilities:
        return ""
    s = "ies" if len(agent.capabilities) > 1 else "y"
    return f"; with capabilit{s} {', '.join(agent.capabilities)}"


def _host_destroy(obs: ObservedHost, cause: str) -> HostDestroy:
    return HostDestroy(id=f"host:{obs.name}:destroy:{obs.id[:12]}", name=obs.name, provider=obs.key, cause=cause,
                       observed_host=obs)


def _reconcile_hosts(b: Builder) -> dict[str, Action]:
    """Shared hosts: create, replace or start the holder/sandbox of each host that
    has enabled agents; destroy hosts with none. Returns host name -> action."""
    observed = group(b.observed.hosts)
    out: dict[str, Action] = {}
    for name, host in sorted(b.desired.hosts.items()):
        found = observed.get(name, [])
        if not b.host_in_scope(name):
            continue
        wanted = [a for a in b.desired.agents_on(name) if a.enabled]
        if not wanted:
            for obs in found:  # a declared host with no agents runs nothing
                if not b.holds_kept_agents(obs):
                    b.add(_host_destroy(obs, "no enabled agents on this host"))
            continue
        if not found:
            out[name] = b.add(HostCreate(id=f"host:{name}", name=name, provider=host.key,
                                         cause=f"no {HOST_NOUN[host.provider]}", desired_host=host))
            continue
        keep, extras = pick(found, host.spec_hash)
        b.kept_hosts[name] = keep
        for obs in extras:
            if not b.holds_kept_agents(obs):
                b.add(_host_destroy(obs, f"duplicate {HOST_NOUN[obs.provider]}"))
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
            out[name] = b.add(HostReplace(id=f"host:{name}", name=name, provider=host.key, cause=cause,
                                          changes=changes, desired_host=host, observed_host=keep))
        elif keep.state != "running":
            out[name] = b.add(HostStart(id=f"host:{name}", name=name, provider=host.key,
                                        cause=f"{HOST_NOUN[keep.provider]} {_exit_cause(keep)}", desired_host=host,
                                        observed_host=keep))
        else:
            b.unchanged.append(f"host:{name}")
    return out


def _reconcile_agents(b: Builder, host_actions: dict[str, Action]) -> dict[str, list[str]]:
    """Every agent: create/join, replace, start, restart, stop or leave alone;
    destroy agents that fleet.yaml no longer names. Returns, per observed shared
    host, the ids of the agent destroys its own destroy must wait for."""
    observed = group(b.observed.agents)
    waits: dict[str, list[str]] = {}

    def destroy(obs: ObservedAgent, cause: str) -> None:
        act = b.add(AgentDestroy(id=f"agent:{obs.name}:destroy:{obs.id[:12]}", name=obs.name, host=obs.host,
                                 provider=obs.key, cause=cause, observed_agent=obs))
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
        if not agent.enabled:
            if found:
                keep, extras = pick(found, agent.spec_hash)
                for obs in extras:
                    destroy(obs, "duplicate container")
                if keep.state in ("running", "restarting", "paused"):
                    b.add(AgentStop(id=f"agent:{name}", name=name, host=agent.host, provider=agent.key,
                                    cause="enabled: false", desired_agent=agent, observed_agent=keep))
                else:
                    b.unchanged.append(f"agent:{name}")
            continue
        if not found:
            if agent.host:
                b.add(AgentCreate(id=f"agent:{name}", op="join", name=name, host=agent.host, provider=agent.key,
                                  cause=f"not on host {agent.host}{_caps_note(agent)}", depends_on=deps,
                                  desired_agent=agent))
            else:
                b.add(AgentCreate(id=f"agent:{name}", op="create", name=name, provider=agent.key,
                                  cause=f"no container{_caps_note(agent)}", desired_agent=agent))
            continue
        keep, extras = pick(found, agent.spec_hash)
        for obs in extras:
            destroy(obs, "duplicate container")
        _reconcile_one(b, agent, keep, host_act, b.kept_hosts.get(agent.host) if agent.host else None, deps)

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
    b: Builder,
    agent: DesiredAgent,
    obs: ObservedAgent,
    host_act: Action | None,
    obs_host: ObservedHost | None,
    deps: tuple[str, ...],
) -> None:
    name = agent.name
    common = dict(id=f"agent:{name}", name=name, host=agent.host, provider=agent.key, depends_on=deps,
                  desired_agent=agent, observed_agent=obs)
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
        b.add(AgentReplace(cause=cause, changes=changes, **common))  # type: ignore[arg-type]
        return
    if host_act is not None and host_act.op == "start":
        b.add(AgentRestart(cause=f"host {agent.host} restarted", **common))  # type: ignore[arg-type]
        return
    if obs.state in ("exited", "created"):
        finished = (agent.restart == "never" and obs.state != "created") or (
            agent.restart == "on-failure" and obs.state == "exited" and obs.exit_code == 0
        )
        if not finished:
            b.add(AgentStart(cause=_exit_cause(obs), **common))  # type: ignore[arg-type]
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


def _destroy_orphan_hosts(b: Builder, waits: dict[str, list[str]]) -> None:
    """Observed hosts fleet.yaml no longer declares go after their agents."""
    if b.opts.prune and not b.opts.targets:
        for obs in sorted(b.observed.hosts, key=lambda h: h.name):
            if obs.name not in b.desired.hosts:
                b.add(_host_destroy(obs, "not in fleet.yaml"))
    # A host goes only after every container on it has left: destroyed, replaced
    # elsewhere (an agent moved off it) or stopped (disabled).
    leaving: dict[str, list[str]] = {}
    for act in b.actions:
        if isinstance(act, (AgentDestroy, AgentReplace, AgentStop)) and act.observed_agent.host:
            leaving.setdefault(act.observed_agent.host, []).append(act.id)
    # A host re-created in place (replace) also goes first: the agents leaving it
    # (removed or stopped) do so before, never while its sandbox is snapshotted
    # or its holder removed (its re-joining agents already wait for it).
    ops = {a.id: a.op for a in b.actions}
    gone_first = {host: [i for i in ids if ops[i] in ("destroy", "stop")] for host, ids in leaving.items()}
    fixed: list[Action] = []
    for act in b.actions:
        if isinstance(act, HostDestroy) and leaving.get(act.name):
            act = act.model_copy(update={"depends_on": tuple(leaving[act.name])})
        elif isinstance(act, HostReplace) and gone_first.get(act.name):
            act = act.model_copy(update={"depends_on": tuple(act.depends_on) + tuple(gone_first[act.name])})
        fixed.append(act)
    b.actions[:] = fixed


def _first_messages(b: Builder) -> None:
    """An agent's `message:` is typed in once, right after its container first
    starts: after a create/join/replace, or later if that delivery never happened
    (an apply killed in between, an agent that was not running)."""
    agent_acts = {a.name: a for a in b.actions if a.kind == "agent" and a.id == f"agent:{a.name}"}
    observed = group(b.observed.agents)
    for name, agent in sorted(b.desired.agents.items()):
        if not agent.message or not agent.enabled or not b.in_scope(name):
            continue
        act = agent_acts.get(name)
        obs = pick(observed[name], agent.spec_hash)[0] if observed.get(name) else None

        def message(cause: str, deps: tuple[str, ...] = (), seen: ObservedAgent | None = None) -> None:
            b.add(MessageSend(id=f"message:{name}", name=name, host=agent.host, provider=agent.key, cause=cause,
                              depends_on=deps, desired_agent=agent, observed_agent=seen))

        if act is not None and act.op in ("create", "join", "replace"):
            message("first message", (act.id,))
        elif obs is not None and obs.message_pending and (act is not None and act.op in ("start", "restart")):
            message("first message not delivered yet", (act.id,), obs)
        elif obs is not None and obs.message_pending and act is None and obs.state == "running":
            message("first message not delivered yet", seen=obs)
