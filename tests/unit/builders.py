"""Small builders for hand-made Desired/Observed states in reconcile tests.

Reconcile is pure, so its tests build both sides by hand: `agent()`/`host()` make
desired records, `seen()`/`seen_host()` make the observed record a provider would
report for them (same spec hash unless told otherwise), `desired()`/`observed()`
gather them. Ids are unique and stable within a test run.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from reconciler.core.model import (
    Desired,
    DesiredAgent,
    DesiredHost,
    ImageRef,
    ModalOptions,
    Observed,
    ObservedAgent,
    ObservedHost,
    Workspace,
)

FLEET = "demo"
_ids = itertools.count(1)


def new_id(prefix: str = "c") -> str:
    """A container-id-like string whose first 12 characters are unique."""
    return f"{prefix}{next(_ids):011d}" + "f" * 52


def agent(
    name: str,
    *,
    host: str | None = None,
    provider: str = "docker",
    image: str = "img:1",
    command: tuple[str, ...] | list[str] | None = ("sleep", "infinity"),
    env: dict[str, str] | None = None,
    ports: dict[str, int] | None = None,
    grants: tuple[str, ...] | list[str] = (),
    restart: str = "always",
    enabled: bool = True,
    workspace: str | None = None,
    message: str | None = None,
    engine: str | None = None,
) -> DesiredAgent:
    return DesiredAgent(
        name=name,
        host=host,
        provider=provider,  # type: ignore[arg-type]
        image=ImageRef(ref=image),
        workspace=Workspace(path=Path(workspace)) if workspace else None,
        command=tuple(command) if command is not None else None,
        message=message,
        env=dict(env or {}),
        ports=dict(ports or {}),
        grants=tuple(grants),
        restart=restart,  # type: ignore[arg-type]
        enabled=enabled,
        engine=engine,
    )


def host(
    name: str,
    *,
    provider: str = "docker",
    image: str = "img:1",
    workspace: str | None = None,
    engine: str | None = None,
) -> DesiredHost:
    """A shared host; `desired()` fills in its ports from its agents."""
    return DesiredHost(
        name=name,
        provider=provider,  # type: ignore[arg-type]
        image=ImageRef(ref=image),
        workspace=Workspace(path=Path(workspace)) if workspace else None,
        modal=ModalOptions() if provider == "modal" else None,
        engine=engine,
    )


def desired(*items: DesiredAgent | DesiredHost, fleet: str = FLEET) -> Desired:
    """Gather agents and hosts; each host gets the sorted union of its agents'
    container ports, as `load` computes it."""
    agents = {a.name: a for a in items if isinstance(a, DesiredAgent)}
    hosts: dict[str, DesiredHost] = {}
    for h in items:
        if isinstance(h, DesiredHost):
            ports = sorted({p for a in agents.values() if a.host == h.name for p in a.ports.values()})
            hosts[h.name] = h.model_copy(update={"ports": tuple(ports)})
    return Desired(fleet=fleet, file=Path("/nonexistent/fleet.yaml"), hosts=hosts, agents=agents)


def seen(
    a: DesiredAgent,
    *,
    state: str = "running",
    exit_code: int | None = None,
    id: str | None = None,
    spec: dict[str, Any] | None = None,
    host_id: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    ports: dict[int, int] | None = None,
    message_pending: bool = False,
    **spec_changes: Any,
) -> ObservedAgent:
    """The record a provider reports for an agent created from `a`.

    `spec_changes` (e.g. `env={"TZ": "UTC"}`) describe what the running
    container was created with when it differs from `a`: the observed spec and
    its hash are then those of the changed agent.
    """
    made_from = a.model_copy(update=spec_changes) if spec_changes else a
    the_spec = spec if spec is not None else made_from.spec()
    from reconciler.core.model import canonical_hash

    return ObservedAgent(
        name=a.name,
        host=made_from.host,
        provider=made_from.provider,
        id=id or new_id("a"),
        state=state,  # type: ignore[arg-type]
        exit_code=exit_code,
        spec_hash=canonical_hash(the_spec),
        spec=the_spec,
        ports=dict(ports) if ports is not None else {p: 30000 + p % 1000 for p in made_from.ports.values()},
        created=created,
        host_id=host_id,
        message_pending=message_pending,
        engine=made_from.engine,
    )


def seen_host(
    h: DesiredHost,
    *,
    state: str = "running",
    id: str | None = None,
    created: str = "2026-01-01T00:00:00Z",
    **spec_changes: Any,
) -> ObservedHost:
    made_from = h.model_copy(update=spec_changes) if spec_changes else h
    return ObservedHost(
        name=h.name,
        provider=made_from.provider,
        id=id or new_id("h"),
        state=state,  # type: ignore[arg-type]
        spec_hash=made_from.spec_hash,
        spec=made_from.spec(),
        # a Docker holder publishes nothing: routes go to its bridge address
        ports={p: 40000 + p % 1000 for p in made_from.ports} if made_from.provider == "modal" else {},
        address="172.17.0.9" if made_from.provider == "docker" else None,
        created=created,
        engine=made_from.engine,
    )


def observed(*records: ObservedAgent | ObservedHost, fleet: str = FLEET, routes: Any = None,
             unreachable: dict[str, str] | None = None, networks_missing: tuple[str, ...] = ()) -> Observed:
    return Observed(
        fleet=fleet,
        hosts=tuple(r for r in records if isinstance(r, ObservedHost)),
        agents=tuple(r for r in records if isinstance(r, ObservedAgent)),
        routes=routes,
        unreachable=unreachable or {},
        networks_missing=networks_missing,
    )


def by_id(plan) -> dict[str, Any]:
    return {a.id: a for a in plan.actions}


def ops(plan, *, routes: bool = False) -> dict[str, str]:
    """action id -> op, without the route action unless asked."""
    return {a.id: a.op for a in plan.actions if routes or a.kind != "route"}


def settled(d: Desired, *records: ObservedAgent | ObservedHost) -> Observed:
    """An Observed whose route table already holds what the running agents need,
    so a plan for it carries no route action unless something moves."""
    from reconciler.routing.table import routes_for

    bare = observed(*records, fleet=d.fleet)
    return bare.model_copy(update={"routes": tuple(r.model_dump() for r in routes_for(d, bare))})
