"""Observe: what exists and belongs to a fleet, across providers, in one
`Observed`. No decisions here.

Each provider lists what carries its labels/tags (one cheap call per provider);
the local records add what the labels cannot say (first messages delivered,
agents a person stopped, agents holding a grant credential), the route table
this fleet's current routes, and Docker whether the agents' network exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.core.errors import EngineUnavailable, FleetError
from reconciler.core.model import Desired, Observed, ObservedAgent, ObservedHost, split_key
from reconciler.providers.base import get_provider, images_of, network_of, snapshots_of, volumes_of
from reconciler.state import messages, stops, usage, workspaces


def providers_of(desired: Desired) -> list[str]:
    """The provider keys to observe (core/model.py `provider_key`): the local
    Docker engine always (private agents live there); Modal and each `engine:`
    only when fleet.yaml names it or the fleet still has resources there (see
    usage.py), so a fleet without Modal hosts never imports modal, and a host
    removed from the file (or moved to another engine) is still found to be destroyed."""
    names = ({"docker"} | {h.key for h in desired.hosts.values()} | {a.key for a in desired.agents.values()}
             | usage.used(desired.fleet))
    return sorted(names)


def _observe_one(key: str, fleet: str, unreachable: dict[str, str]) -> tuple[list[ObservedHost], list[ObservedAgent], list[str]] | None:
    """One provider's listing. An engine named by `engine:` that cannot be reached
    is recorded in `unreachable` (None returned): what runs there is unknown, which
    is not "nothing there". The local engine not answering stays an error."""
    engine = split_key(key)[1]
    provider = get_provider(key)
    try:
        h, a = provider.observe(fleet)
        return h, a, provider.observe_warnings(fleet)  # e.g. docker: copies carrying fleet's labels
    except FleetError as exc:
        if engine is None or not isinstance(exc, EngineUnavailable):
            raise
        reason = str(exc)
        prefix = f"engine {engine} unreachable: "
        # "cannot list containers: engine E unreachable: WHY" -> "WHY" (the engine is named by the caller)
        unreachable[engine] = reason.split(prefix, 1)[1] if prefix in reason else reason
        return None


def observe(fleet: str, providers: list[str], volumes: bool = False) -> Observed:
    """`volumes`: also list the fleet's workspace volumes and its copies and
    worktrees under $FLEET_HOME (only `fleet destroy --purge-workspaces` acts on
    them: an apply spends no call on them)."""
    hosts: list[ObservedHost] = []
    agents: list[ObservedAgent] = []
    warnings: list[str] = []
    unreachable: dict[str, str] = {}
    for name in providers:
        seen = _observe_one(name, fleet, unreachable)
        if seen is not None:
            hosts.extend(seen[0])
            agents.extend(seen[1])
            warnings.extend(seen[2])
    reached = [n for n in providers if split_key(n)[1] not in unreachable]
    delivered = messages.states(fleet)
    agents = [
        a.model_copy(update={"message_pending": False}) if a.message_pending and messages.delivered(fleet, a.name, a.id, delivered) else a
        for a in agents
    ]
    stopped = stops.table(fleet)
    agents = [
        a.model_copy(update={"stop_spec_hash": spec}) if (spec := stops.spec_for(stopped.get(a.name), a.id)) else a
        for a in agents
    ]
    from reconciler.routing.sync import observe_routes

    routes, proxy_running = observe_routes(fleet)
    look = images_of(get_provider("docker")) if "docker" in providers else None
    images = look.observe_images(fleet) if look is not None else ()
    snapshots: dict[str, str] = {}  # `restore: latest` is resolved from these when planning
    vols: list[str] = []
    for name in reached:
        snaps = snapshots_of(get_provider(name))
        if snaps is not None:
            snapshots.update(snaps.observe_snapshots(fleet))
        # remote engines' volumes are per engine (observe_engines.py), never mixed with the local ones
        held = volumes_of(get_provider(name)) if volumes and "@" not in name else None
        if held is not None:
            vols.extend(held.observe_volumes(fleet))
    net = network_of(get_provider("docker")) if "docker" in providers else None
    # the agents' network on each other engine (one call each)
    missing = tuple(n for n in reached if n.startswith("docker@") and (nw := network_of(get_provider(n))) is not None
                    and not nw.observe_network())
    from reconciler.grants.agents import holders
    from reconciler.state.relays import running as relays_running
    from reconciler.engine.observe_engines import engine_facts

    engine_images, engine_volumes = engine_facts(fleet, reached, unreachable, partial=volumes)

    return Observed(
        fleet=fleet, hosts=tuple(hosts), agents=tuple(agents), routes=routes, proxy_running=proxy_running, images=images,
        snapshots=snapshots, volumes=tuple(sorted(vols)), warnings=tuple(warnings),
        workspace_copies=workspaces.copies(fleet) if volumes else (),
        credentials=holders(fleet), network=net.observe_network() if net is not None else True,
        relays=tuple(sorted(relays_running(fleet))), unreachable=unreachable, networks_missing=missing,
        engine_images=engine_images, engine_volumes=engine_volumes,
    )


@dataclass(frozen=True)
class StatusFacts:
    """What `fleet status` shows, as data: the observation plus, per container,
    the facts observation leaves out (restarts, last exit, start time) and
    first-message delivery states. view/status.py makes the rows."""

    desired: Desired
    observed: Observed
    details: dict[str, dict[str, Any]]
    messages: dict[str, Any]


def status_facts(desired: Desired) -> StatusFacts:
    names = providers_of(desired)
    observed = observe(desired.fleet, names)
    details: dict[str, dict[str, Any]] = {}
    for name in names:
        mine = [a for a in observed.agents if a.key == name]
        if mine:
            details.update(get_provider(name).details(desired.fleet, mine))
    return StatusFacts(desired, observed, details, messages.states(desired.fleet))
