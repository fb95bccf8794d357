"""The pipeline, end to end: load -> observe -> reconcile -> execute.

Commands and the watch loop call these functions; none of them decides
anything that `reconcile` does not decide. `apply_plan` is the one way a plan
is carried out (with its bookkeeping: which providers the fleet uses), for
`fleet apply`, saved plans, `fleet destroy`, the verbs and the watch loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from reconciler.core.model import Desired, Observed, ObservedAgent, ObservedHost, provider_key
from reconciler.core.plan import Plan
from reconciler.core.reconcile import Options, reconcile, reconcile_destroy
from reconciler.engine.events import Event, Result
from reconciler.engine.execute import execute
from reconciler.engine.observe import StatusFacts, observe, providers_of, status_facts
from reconciler.load.loader import load
from reconciler.state import usage

__all__ = [
    "Event", "Result", "Snapshot", "StatusFacts", "apply_plan", "destroy_snapshot", "observe", "plan", "plan_file",
    "providers_of", "status_facts",
]


@dataclass(frozen=True)
class Snapshot:
    desired: Desired
    observed: Observed
    plan: Plan


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
    snap: Snapshot,
    parallel: int = 8,
    on_event: Callable[[Event], None] | None = None,
    cancel: threading.Event | None = None,
) -> Result:
    """Carry out `snap.plan` (computed from `snap.observed`). Before: the
    providers fleet.yaml names are recorded as used (so their resources are
    observed, hence destroyed, later); after a run without failures: only the
    providers something still uses are kept."""
    fleet = snap.desired.fleet
    wanted = {h.key for h in snap.desired.hosts.values()} | {a.key for a in snap.desired.agents.values() if a.engine} | {
        a.provider for a in snap.plan.actions if a.kind in ("host", "agent") and a.op in ("create", "join", "replace")
    }
    # an engine that could not be observed may still hold the fleet's resources
    wanted |= {provider_key("docker", e) for e in snap.observed.unreachable}
    usage.record(fleet, *wanted)
    result = execute(snap.desired, snap.plan, parallel=parallel, on_event=on_event, cancel=cancel,
                     observed=snap.observed)
    if result.ok:
        done = set(result.done)
        gone = {a.gone for a in snap.plan.actions if a.id in done and a.gone is not None}
        records: list[ObservedHost | ObservedAgent] = [*snap.observed.hosts, *snap.observed.agents]
        left = {r.key for r in records if r.id not in gone}
        usage.settle(fleet, wanted | left)
    return result


def destroy_snapshot(desired: Desired, purge_volumes: bool = False) -> Snapshot:
    """The plan of `fleet destroy`; `purge_volumes` (--purge-workspaces): the
    fleet's workspace volumes go too, as actions of the plan."""
    observed = observe(desired.fleet, providers_of(desired), volumes=purge_volumes)
    return Snapshot(desired, observed, reconcile_destroy(observed, purge_volumes=purge_volumes))
