"""The pipeline, end to end: load -> observe -> reconcile -> execute.

Commands (and the watch loop) call these functions; none of them decides
anything that `reconcile` does not decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reconciler.state import messages
from reconciler.state import stops
from reconciler.state import usage
from reconciler.engine.execute import Event, Result, execute
from reconciler.load.loader import load
from reconciler.core.model import Desired, Observed
from reconciler.core.plan import Plan
from reconciler.providers.base import get_provider, images_of
from reconciler.core.reconcile import Options, reconcile, reconcile_destroy


@dataclass(frozen=True)
class Snapshot:
    desired: Desired
    observed: Observed
    plan: Plan


def providers_of(desired: Desired) -> list[str]:
    """Docker always (private agents live there); Modal only when a host asks
    or the fleet still has Modal resources (see usage.py), so a fleet without
    Modal hosts never imports modal and a removed Modal host is still destroyed."""
    names = {"docker"} | {h.provider for h in desired.hosts.values()} | usage.used(desired.fleet)
    return sorted(names)


def observe(fleet: str, providers: list[str]) -> Observed:
    hosts, agents, warnings = [], [], []
    for name in providers:
        provider = get_provider(name)
        h, a = provider.observe(fleet)
        hosts.extend(h)
        agents.extend(a)
        warnings.extend(provider.observe_warnings(fleet))  # e.g. docker: copies carrying fleet's labels
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
    return Observed(
        fleet=fleet, hosts=tuple(hosts), agents=tuple(agents), routes=routes, proxy_running=proxy_running, images=images,
        warnings=tuple(warnings),
    )


def plan(desired: Desired, options: Options | None = None, check_grants: bool = True) -> Snapshot:
    """Observe and reconcile. Refuses first, before anything changes, a fleet
    whose hostnames another fleet routes, and (for anything that will apply) one
    whose agents name grants that are not stored; `fleet diff` skips the grant
    check so a machine without the credentials (CI) can still preview."""
    from reconciler.routing.sync import check_names, check_proxy_port

    check_names(desired)
    check_proxy_port(desired)
    if check_grants:
        from reconciler.grants.store import check_stored

        check_stored(desired)
    observed = observe(desired.fleet, providers_of(desired))
    return Snapshot(desired, observed, reconcile(desired, observed, options))


def plan_file(path: Path | None, options: Options | None = None) -> Snapshot:
    return plan(load(path), options)


def apply_plan(
    snap: Snapshot, parallel: int = 8, on_event: Callable[[Event], None] | None = None
) -> Result:
    fleet = snap.desired.fleet
    wanted = {h.provider for h in snap.desired.hosts.values()}
    usage.record(fleet, *wanted)
    result = execute(snap.desired, snap.plan, parallel=parallel, on_event=on_event)
    if result.ok:
        done = set(result.done)
        gone = {
            (a.observed_host or a.observed_agent).id  # type: ignore[union-attr]
            for a in snap.plan.actions
            if a.id in done and a.op in ("destroy", "replace") and (a.observed_host or a.observed_agent)
        }
        left = {r.provider for r in (*snap.observed.hosts, *snap.observed.agents) if r.id not in gone}
        usage.settle(fleet, wanted | left)
    return result


def destroy_snapshot(desired: Desired) -> Snapshot:
    observed = observe(desired.fleet, providers_of(desired))
    return Snapshot(desired, observed, reconcile_destroy(observed))


def status_rows(desired: Desired) -> list[dict]:
    """What `fleet status` shows: observation plus, per container, the facts
    observation leaves out (restarts, last exit, start time) and first-message
    delivery state."""
    from reconciler.view import render

    observed = observe(desired.fleet, providers_of(desired))
    details: dict[str, dict] = {}
    for name in providers_of(desired):
        mine = [a for a in observed.agents if a.provider == name]
        if mine:
            details.update(get_provider(name).details(desired.fleet, mine))
    return render.status_rows(desired, observed, details, messages.states(desired.fleet))
