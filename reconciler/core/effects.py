"""Side effects beside the containers: grant credentials and the agents' network.

Decided here, from the same `Desired` and `Observed` as everything else, and
added to the plan as actions with a cause, so `fleet diff` shows them, a saved
plan carries them and the executor only carries them out:

- `credentials issue`: an agent with grants whose container is created or
  replaced gets a fresh proxy credential first (its create waits for it and
  puts the proxy settings in the container). Nothing else issues one, so an
  apply with nothing to change issues nothing.
- `credentials revoke`: an agent that holds a credential and is no longer in
  fleet.yaml, or has no grants any more, loses it (after its container goes).
- `relay start` / `relay stop`: a Modal host with agents with grants has a
  relay on this machine (their way back to the forward proxy): started when
  observation finds it not running or the host's sandbox is new; stopped when
  no agent on it has grants any more or the host goes.
- `network create`: the agents' shared network (Docker `fleet_agents`) is made
  before the first container that needs it, when observation did not find it.

Pure: stdlib, pydantic and core only.
"""

from __future__ import annotations

from reconciler.core import labels as L
from reconciler.core.builder import Builder
from reconciler.core.model import Desired, DesiredAgent, Observed, split_key
from reconciler.core.plan import (
    Action,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    CredentialIssue,
    CredentialRevoke,
    HostCreate,
    HostReplace,
    NetworkCreate,
    RelayStart,
    RelayStop,
)

NETWORK_ID = f"network:{L.NETWORK}"


def issue_id(agent: str) -> str:
    """The id of the action issuing `agent`'s credential (its create reads the outcome)."""
    return f"credentials:{agent}:issue"


def revoke_id(agent: str) -> str:
    return f"credentials:{agent}:revoke"


def has_grants(agent: DesiredAgent) -> bool:
    """Grants apply to Docker agents and to agents on Modal hosts (through the host's relay)."""
    return bool(agent.grants) and agent.provider in ("docker", "modal")


def relay_id(host: str, op: str) -> str:
    return f"relay:{host}:{op}"


def plan_effects(b: Builder) -> None:
    """Add the credential, relay and network actions the plan's creates and destroys need."""
    b.actions[:] = _credentials(b.actions, b.desired, b.observed, b.opts.prune, b.opts.targets)
    b.actions[:] = _relays(b.actions, b.desired, b.observed, b.opts.prune, b.opts.targets)
    b.actions[:] = network_actions(b.actions, b.observed)


def _relays(
    actions: list[Action], desired: Desired, observed: Observed, prune: bool, targets: frozenset[str]
) -> list[Action]:
    """Modal hosts with agents with grants need their relay running on this machine:
    started when it is not, and again when the host's sandbox is created or replaced;
    stopped when no agent on the host has grants any more or the host goes."""
    wanted: dict[str, list[str]] = {}
    for agent in desired.agents.values():
        if agent.provider == "modal" and has_grants(agent) and agent.host is not None and agent.host in desired.hosts:
            wanted.setdefault(agent.host, []).append(agent.name)
    out = list(actions)
    for host, names in sorted(wanted.items()):
        if targets and host not in targets and not targets & set(names):
            continue  # `--target` touches only what it names
        new_box = [a.id for a in actions if isinstance(a, (HostCreate, HostReplace)) and a.name == host]
        if host in observed.relays and not new_box:
            continue
        why = "its sandbox is new" if host in observed.relays else "it is not running"
        start_id = relay_id(host, "start")
        out = [_needs(a, start_id) if isinstance(a, (AgentCreate, AgentReplace)) and a.name in names else a for a in out]
        out.append(RelayStart(
            id=start_id, name=host, host=host, provider="modal", desired_host=desired.hosts[host],
            depends_on=tuple(new_box),
            cause=f"agent{'s' if len(names) > 1 else ''} {', '.join(sorted(names))} on host {host} "
                  f"ha{'ve' if len(names) > 1 else 's'} grants; {why}",
        ))
    for host in sorted(set(observed.relays) - set(wanted)):
        if (targets and host not in targets) or (host not in desired.hosts and not prune):
            continue
        cause = f"host {host} is not in fleet.yaml" if host not in desired.hosts else f"no agent on host {host} has grants"
        out.append(relay_stop(host, cause, out))
    return out


def relay_stop(host: str, cause: str, actions: list[Action]) -> RelayStop:
    """Stop `host`'s relay once its host and agents in `actions` are gone."""
    waits = tuple(a.id for a in actions if a.op == "destroy" and a.kind in ("host", "agent") and (a.host == host or a.name == host))
    return RelayStop(id=relay_id(host, "stop"), name=host, host=host, provider="modal", cause=cause, depends_on=waits)


def _needs(act: Action, dep: str) -> Action:
    return act.model_copy(update={"depends_on": (*act.depends_on, dep)})


def _credentials(
    actions: list[Action], desired: Desired, observed: Observed, prune: bool, targets: frozenset[str]
) -> list[Action]:
    out: list[Action] = []
    issues: list[Action] = []
    for act in actions:
        if isinstance(act, (AgentCreate, AgentReplace)) and has_grants(act.desired_agent):
            agent = act.desired_agent
            issue = CredentialIssue(
                id=issue_id(agent.name), name=agent.name, host=agent.host, provider=agent.key,
                cause=f"agent {agent.name} has grants: {', '.join(agent.grants)}", desired_agent=agent,
            )
            issues.append(issue)
            act = _needs(act, issue.id)
        out.append(act)
    revokes: list[Action] = []
    for name in sorted(set(observed.credentials)):
        if targets and name not in targets:
            continue
        want = desired.agents.get(name)
        if want is not None and has_grants(want):
            continue  # kept (or re-issued with its create)
        if want is None and not prune:
            continue  # --no-prune keeps what fleet.yaml no longer names, and its credential
        cause = f"agent {name} is not in fleet.yaml" if want is None else f"agent {name} has no grants"
        revokes.append(revoke_for(name, cause, out))
    return [*issues, *out, *revokes]


def revoke_for(name: str, cause: str, actions: list[Action]) -> CredentialRevoke:
    """Revoke `name`'s credential once its containers in `actions` are gone or replaced."""
    waits = tuple(
        a.id for a in actions if a.kind == "agent" and a.name == name and isinstance(a, (AgentDestroy, AgentReplace))
    )
    return CredentialRevoke(id=revoke_id(name), name=name, provider="docker", cause=cause, depends_on=waits)


def network_actions(actions: list[Action], observed: Observed) -> list[Action]:
    """When the agents' network is missing, create it before every container that goes on it
    (Docker shared-host holders and private agents; joined agents use their holder's)."""
    missing = ([] if observed.network else ["docker"]) + list(observed.networks_missing)
    for key in missing:  # the local engine, then each other engine (docker@ENGINE) lacking it
        actions = _network_for(key, actions)
    return actions


def _network_for(key: str, actions: list[Action]) -> list[Action]:
    def uses(a: Action) -> bool:
        if a.provider != key:
            return False
        if isinstance(a, (HostCreate, HostReplace)):
            return True
        return isinstance(a, (AgentCreate, AgentReplace)) and not a.desired_agent.host

    if not any(uses(a) for a in actions):
        return actions
    engine = split_key(key)[1]
    net = NetworkCreate(id=NETWORK_ID if engine is None else f"{NETWORK_ID}@{engine}", name=L.NETWORK, provider=key,
                        cause=f"the agents' network {L.NETWORK} does not exist" + (f" on engine {engine}" if engine else ""))
    return [net, *(_needs(a, net.id) if uses(a) else a for a in actions)]


def destroy_effects(observed: Observed, actions: list[Action], cause: str) -> list[Action]:
    """`fleet destroy`: every credential the fleet's agents hold is revoked, every relay stopped."""
    return [*(revoke_for(name, cause, actions) for name in sorted(set(observed.credentials))),
            *(relay_stop(host, cause, actions) for host in sorted(set(observed.relays)))]
