"""`fleet ls`: every fleet on this machine, from the labels fleet stamped.

No fleet.yaml is read: one label-filtered list call to the Docker engine finds
every container carrying `dev.fleet.project`, whatever the fleet or directory;
fleets that used Modal (remembered in $FLEET_HOME/fleets, see usage.py) are
observed there too. `summarise` is pure: rows in, one record per fleet out.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

from reconciler.core import labels as L
from reconciler.core.errors import EngineUnavailable, FleetError
from reconciler.state.home import fleet_home

if TYPE_CHECKING:
    from reconciler.providers.docker.driver import DockerProvider


def summarise(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """records: {fleet, kind (host|agent), name, state, provider, stopped} -> per
    fleet: agent and host counts, agent states, providers; sorted by name."""
    fleets: dict[str, dict[str, Any]] = {}
    for r in records:
        f = fleets.setdefault(r["fleet"], {"fleet": r["fleet"], "agents": 0, "hosts": 0, "states": Counter(),
                                            "providers": set()})
        f["providers"].add(r["provider"])
        if r["kind"] == "host":
            f["hosts"] += 1
        else:
            f["agents"] += 1
            f["states"][r["state"]] += 1
    out = []
    for name in sorted(fleets):
        f = fleets[name]
        out.append({**f, "states": dict(sorted(f["states"].items())), "providers": sorted(f["providers"]),
                    "running": f["states"].get("running", 0)})
    return out


def _docker() -> DockerProvider:
    """The Docker provider itself, for what only Docker has (one list call over
    every fleet, volumes); imported here so commands that never use Docker never load it."""
    from reconciler.providers.base import get_provider
    from reconciler.providers.docker.driver import DockerProvider

    provider = get_provider("docker")
    if not isinstance(provider, DockerProvider):
        raise FleetError(f"the docker provider is a {type(provider).__name__}, which cannot do this")
    return provider


def purge_volumes(fleet: str) -> list[str]:
    """Remove the fleet's Docker volumes (`fleet destroy --purge-workspaces`); their names."""
    return _docker().remove_volumes(fleet)


def docker_records() -> list[dict[str, Any]]:
    """Every fleet-labelled container of the engine: one list call."""
    api = _docker().api
    try:
        rows = api.containers(all=True, filters={"label": L.PROJECT})
    except Exception as exc:
        raise EngineUnavailable(f"cannot list containers: {str(exc).splitlines()[0][:200]}") from None
    out = []
    for c in rows:
        lab = c.get("Labels") or {}
        fleet, kind = lab.get(L.PROJECT), lab.get(L.KIND)
        if not fleet or kind not in ("host", "agent"):
            continue
        out.append({"fleet": fleet, "kind": kind, "name": lab.get(L.AGENT) or lab.get(L.HOST) or "?",
                    "state": c.get("State") or "unknown", "provider": "docker"})
    return out


def modal_records() -> tuple[list[dict[str, Any]], list[str]]:
    """Hosts and agents of the fleets that used Modal from this FLEET_HOME, and a
    note per fleet that could not be observed there."""
    from reconciler.state import usage

    try:
        names = sorted(n[:-5] for n in os.listdir(fleet_home() / "fleets") if n.endswith(".json"))
    except FileNotFoundError:
        return [], []
    out: list[dict[str, Any]] = []
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
        out += [{"fleet": fleet, "kind": "host", "name": h.name, "state": h.state, "provider": "modal"} for h in hosts]
        out += [{"fleet": fleet, "kind": "agent", "name": a.name, "state": a.state, "provider": "modal"} for a in agents]
    return out, notes


def list_fleets() -> tuple[list[dict[str, Any]], list[str]]:
    records = docker_records()
    more, notes = modal_records()
    return summarise(records + more), notes
