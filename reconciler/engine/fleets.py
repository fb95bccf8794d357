"""`fleet ls`: every fleet on this machine, from the labels fleet stamped.

No fleet.yaml is read: one label-filtered list call to the Docker engine finds
every container carrying `dev.fleet.project`, whatever the fleet or directory;
fleets that used Modal (remembered in $FLEET_HOME/fleets, see usage.py) are
observed there too. `summarise` is pure: `Resource`s in, one `FleetRow` per fleet out.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any, Iterable, Literal

from reconciler.core.errors import FleetError
from reconciler.core.frozen import FrozenMap
from reconciler.core.model import Frozen
from reconciler.state.home import fleet_home


class Resource(Frozen):
    """One host or agent of some fleet, as its labels (or Modal tags) say."""

    fleet: str
    kind: Literal["host", "agent"]
    name: str
    state: str
    provider: str  # a provider key: docker, modal, docker@ENGINE (core/model.py provider_key)


class FleetRow(Frozen):
    """One fleet as `fleet ls` shows it (`-o json`: these keys, in this order)."""

    fleet: str
    agents: int
    hosts: int
    states: FrozenMap[str, int]  # agent state -> how many, by state name
    providers: tuple[str, ...]  # sorted
    running: int

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def summarise(records: Iterable[Resource]) -> list[FleetRow]:
    """Per fleet: agent and host counts, agent states, providers; sorted by name."""
    by_fleet: dict[str, list[Resource]] = {}
    for r in records:
        by_fleet.setdefault(r.fleet, []).append(r)
    out = []
    for name in sorted(by_fleet):
        mine = by_fleet[name]
        states = Counter(r.state for r in mine if r.kind == "agent")
        out.append(FleetRow(
            fleet=name, agents=sum(r.kind == "agent" for r in mine), hosts=sum(r.kind == "host" for r in mine),
            states=dict(sorted(states.items())), providers=tuple(sorted({r.provider for r in mine})),
            running=states.get("running", 0),
        ))
    return out


def docker_records() -> list[Resource]:
    """Every fleet-labelled container of the engine: one list call (the Docker
    provider's "inventory" capability)."""
    from reconciler.providers.base import get_provider, inventory_of

    inventory = inventory_of(get_provider("docker"))
    if inventory is None:
        raise FleetError("the docker provider cannot list every fleet's resources")
    return [Resource.model_validate({**row, "provider": "docker"}) for row in inventory.inventory()]


def modal_records() -> tuple[list[Resource], list[str]]:
    """Hosts and agents of the fleets that used Modal from this FLEET_HOME, and a
    note per fleet that could not be observed there."""
    from reconciler.state import usage

    try:
        names = sorted(n[:-5] for n in os.listdir(fleet_home() / "fleets") if n.endswith(".json"))
    except FileNotFoundError:
        return [], []
    out: list[Resource] = []
    notes: list[str] = []
    for fleet in names:
        if "modal" not in usage.used(fleet):
            continue
        from reconciler.providers.base import get_provider

        try:
            hosts, agents = get_provider("modal").observe(fleet)
        except FleetError as exc:
            notes.append(f"fleet {fleet} on Modal: not observed ({exc})")
            continue
        out += [Resource(fleet=fleet, kind="host", name=h.name, state=h.state, provider="modal") for h in hosts]
        out += [Resource(fleet=fleet, kind="agent", name=a.name, state=a.state, provider="modal") for a in agents]
    return out, notes


def _fleets_here() -> list[str]:
    try:
        return sorted(n[:-5] for n in os.listdir(fleet_home() / "fleets") if n.endswith(".json"))
    except FileNotFoundError:
        return []


def engine_records() -> tuple[list[Resource], list[str]]:
    """Every fleet-labelled container of each other engine (`engine:`) the fleets
    of this FLEET_HOME use (usage.py): one list call per engine, and a note per
    engine that could not be reached."""
    from reconciler.providers.base import get_provider, inventory_of
    from reconciler.state import usage

    keys = sorted({k for fleet in _fleets_here() for k in usage.used(fleet) if k.startswith("docker@")})
    out: list[Resource] = []
    notes: list[str] = []
    for key in keys:
        inventory = inventory_of(get_provider(key))
        if inventory is None:
            continue
        try:
            rows = inventory.inventory()
        except FleetError as exc:
            notes.append(f"engine {key.partition('@')[2]}: not reached ({exc})")
            continue
        out += [Resource.model_validate({**row, "provider": key}) for row in rows]
    return out, notes


def list_fleets() -> tuple[list[FleetRow], list[str]]:
    records = docker_records()
    more, notes = modal_records()
    remote, unreached = engine_records()
    return summarise(records + more + remote), notes + unreached
