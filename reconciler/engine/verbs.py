"""`fleet stop`, `fleet start`, `fleet restart`: the plan for a person's verb.

Pure, like reconcile: (Desired, Observed, verb, names) -> Plan, or a clear error
before anything changes. It picks the agents the verb names (or all of them),
and for each decides what to do: stop a running agent, start a stopped one
(its shared host's holder first when that is down), restart a running one.
A stop never touches a shared host: its holder keeps the network and the
workspace for the agents that remain (and for the ones started later).
Remembering the stop (stops.py) is the caller's job, before it executes.
"""

from __future__ import annotations

from typing import Literal

from reconciler.core.errors import FleetError
from reconciler.load.loader import did_you_mean
from reconciler.core.model import Desired, DesiredAgent, Observed, ObservedAgent
from reconciler.core.plan import Action, AgentRestart, AgentStart, AgentStop, HostStart, Plan, RouteUpdate
from reconciler.core.reconcile import HOST_NOUN

Verb = Literal["stop", "start", "restart"]
UP = ("running", "restarting", "paused")


def _best(found: list[ObservedAgent]) -> ObservedAgent:
    return sorted(found, key=lambda a: (a.state == "running", a.created or ""), reverse=True)[0]


def select(desired: Desired, observed: Observed, verb: Verb, names: list[str], all_agents: bool
           ) -> list[tuple[DesiredAgent, ObservedAgent]]:
    """The (desired agent, its container) pairs a verb acts on; one error listing every bad name."""
    if all_agents and names:
        raise FleetError(f"fleet {verb}: give agent names or --all, not both")
    if not all_agents and not names:
        raise FleetError(f"fleet {verb}: name the agents (fleet {verb} AGENT...) or pass --all")
    by_name: dict[str, list[ObservedAgent]] = {}
    for a in observed.agents:
        by_name.setdefault(a.name, []).append(a)
    if all_agents:
        picked = [(d, _best(by_name[n])) for n, d in sorted(desired.agents.items()) if d.enabled and n in by_name]
        if not picked:
            raise FleetError(f"fleet {desired.fleet} has no agents to {verb}; run `fleet apply` first")
        return picked
    problems: list[str] = []
    picked = []
    known = ", ".join(sorted(desired.agents)) or "none"
    for name in dict.fromkeys(names):
        want = desired.agents.get(name)
        if want is None:
            where = " (a host, not an agent)" if name in desired.hosts else ""
            problems.append(f"no agent '{name}'{where} in fleet {desired.fleet} (agents: {known}){did_you_mean(name, desired.agents)}")
        elif not want.enabled:
            problems.append(f"agent '{name}' is disabled (enabled: false in {desired.file.name}); "
                            f"set enabled: true there to run it")
        elif name not in by_name:
            problems.append(f"agent '{name}' has no container yet; run `fleet apply` first")
        else:
            picked.append((want, _best(by_name[name])))
    if problems:
        raise FleetError("\n".join(f"fleet {verb}: {p}" for p in problems))
    return picked


def plan_verb(desired: Desired, observed: Observed, verb: Verb, names: list[str], all_agents: bool = False) -> Plan:
    """The actions for `fleet stop|start|restart`; agents already in the wanted
    state get none (the stop is still remembered by the caller)."""
    actions: list[Action] = []
    hosts = {h.name: h for h in sorted(observed.hosts, key=lambda h: h.state == "running")}
    host_starts: dict[str, str] = {}
    for want, obs in select(desired, observed, verb, names, all_agents):
        aid, name, on, provider = f"agent:{want.name}", want.name, want.host, obs.provider
        up = obs.state in UP
        if verb == "stop":
            if up:
                actions.append(AgentStop(id=aid, name=name, host=on, provider=provider, cause="fleet stop",
                                         desired_agent=want, observed_agent=obs))
            continue
        deps: tuple[str, ...] = ()
        holder = hosts.get(want.host) if want.host else None
        if not up and holder is not None and holder.state != "running":
            if holder.name not in host_starts:
                act = HostStart(id=f"host:{holder.name}", name=holder.name, provider=holder.provider,
                                cause=f"{HOST_NOUN[holder.provider]} {holder.state}", observed_host=holder,
                                desired_host=desired.hosts.get(holder.name))
                actions.append(act)
                host_starts[holder.name] = act.id
            deps = (host_starts[holder.name],)
        if verb == "restart" and up:
            actions.append(AgentRestart(id=aid, name=name, host=on, provider=provider, cause="fleet restart",
                                        desired_agent=want, observed_agent=obs))
        elif not up:
            actions.append(AgentStart(id=aid, name=name, host=on, provider=provider, cause=f"fleet {verb}",
                                      depends_on=deps, desired_agent=want, observed_agent=obs))
    # a (re)started private agent gets new published ports, a restarted holder may get a new
    # bridge address: their routes follow in the same command, as after an apply
    moved = tuple(a.id for a in actions if a.op in ("start", "restart") and (
        a.kind == "host" or (a.desired_agent is not None and a.desired_agent.host is None and a.desired_agent.ports)))
    if moved and any(a.ports for a in desired.agents.values()):
        whose = ", ".join(a.id.replace("agent:", "").replace("host:", "host ") for a in actions if a.id in moved)
        actions.append(RouteUpdate(cause=f"routes of {whose} ({'started' if verb == 'start' else 'restarted'})",
                                   depends_on=moved))
    return Plan(fleet=desired.fleet, actions=tuple(actions), observed_fingerprint=observed.fingerprint())
