"""Docker observation: one label-filtered list call per fleet (sparse: no
per-container inspect), turned into ObservedHost/ObservedAgent records.

A container is this fleet's only when it carries its labels AND the exact name
fleet gave it (labels.ownership): a copy carrying the labels under another name
is reported as a warning, never adopted, replaced or destroyed.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from reconciler.core import labels as L
from reconciler.core.errors import EngineUnavailable
from reconciler.core.model import ObservedAgent, ObservedHost, State

_EXIT_RE = re.compile(r"Exited \((-?\d+)\)")
_STATES = ("created", "running", "restarting", "paused", "exited", "dead", "removing")


def parse_ports(entries: list[dict[str, Any]] | None) -> dict[int, int]:
    ports: dict[int, int] = {}
    for e in entries or []:
        if e.get("PublicPort") and e.get("Type", "tcp") == "tcp":
            ports[int(e["PrivatePort"])] = int(e["PublicPort"])
    return ports


def address(c: dict[str, Any]) -> str | None:
    """The container's IPv4 address (first network by name), from the sparse list: no inspect."""
    nets = ((c.get("NetworkSettings") or {}).get("Networks")) or {}
    return next((str(nets[n]["IPAddress"]) for n in sorted(nets) if (nets[n] or {}).get("IPAddress")), None)


def state(raw: str) -> State:
    return raw if raw in _STATES else "unknown"  # type: ignore[return-value]  # narrowed by the check


def created(c: dict[str, Any]) -> str:
    return datetime.fromtimestamp(int(c.get("Created", 0)), tz=timezone.utc).isoformat()


def list_containers(api: Any, label_filter: str) -> list[dict[str, Any]]:
    """Containers (all states) carrying `label_filter`; EngineUnavailable when the engine is gone."""
    from docker.errors import DockerException
    from requests.exceptions import ConnectionError as ReqConnectionError

    try:
        rows: list[dict[str, Any]] = api.containers(all=True, filters={"label": label_filter})
    except (DockerException, ReqConnectionError) as exc:
        raise EngineUnavailable(f"cannot list containers: {str(exc).splitlines()[0][:200]}") from None
    return rows


def observe(api: Any, fleet: str, engine: str | None = None) -> tuple[list[ObservedHost], list[ObservedAgent], list[str]]:
    """(hosts, agents, warnings) of `fleet` made for `engine` (label dev.fleet.engine;
    absent: the local engine): what was made for another engine name is not seen."""
    rows = list_containers(api, L.project_filter(fleet))
    hosts: list[ObservedHost] = []
    agents: list[ObservedAgent] = []
    warnings: list[str] = []
    for c in rows:
        lab = c.get("Labels") or {}
        if lab.get(L.PROJECT) != fleet or lab.get(L.ENGINE) != engine:
            continue
        cname = ((c.get("Names") or [""])[0] or "").lstrip("/")
        owned = L.ownership(fleet, lab, cname)
        if owned is None:
            warnings.append(
                f"container {cname or c['Id'][:12]} ({c['Id'][:12]}) carries fleet {fleet}'s labels but is not "
                f"one fleet created (fleet names it {L.expected_name(fleet, lab) or 'nothing'}); ignored"
            )
            continue
        try:
            spec = json.loads(lab.get(L.SPEC, "{}"))
        except ValueError:
            spec = {}
        status = c.get("Status", "")
        m = _EXIT_RE.search(status)
        common: dict[str, Any] = dict(
            provider="docker",
            id=c["Id"],
            state=state(c.get("State", "")),
            spec_hash=lab.get(L.SPEC_HASH, ""),
            spec=spec,
            ports=parse_ports(c.get("Ports", [])),
            address=address(c),
            created=created(c),
            legacy_name=cname if owned == "legacy" else None,
            engine=engine,
        )
        kind = lab.get(L.KIND)
        if kind == "host" and lab.get(L.HOST):
            hosts.append(ObservedHost(name=lab[L.HOST], **common))
        elif kind == "agent" and lab.get(L.AGENT):
            mode = (c.get("HostConfig") or {}).get("NetworkMode", "")
            host_id = mode.split(":", 1)[1] if mode.startswith("container:") else None
            agents.append(
                ObservedAgent(
                    name=lab[L.AGENT],
                    host=lab.get(L.HOST) or None,
                    exit_code=int(m.group(1)) if m else None,
                    status=status,
                    host_id=host_id,
                    message_pending=lab.get(L.MESSAGE) == "pending",
                    **common,
                )
            )
    return hosts, agents, warnings


def inventory(api: Any) -> list[dict[str, str]]:
    """Every fleet-labelled host and agent container of the engine: one list call."""
    out = []
    for c in list_containers(api, L.PROJECT):
        lab = c.get("Labels") or {}
        fleet, kind = lab.get(L.PROJECT), lab.get(L.KIND)
        if not fleet or kind not in ("host", "agent"):
            continue
        out.append({"fleet": fleet, "kind": kind, "name": lab.get(L.AGENT) or lab.get(L.HOST) or "?",
                    "state": c.get("State") or "unknown", "provider": "docker"})
    return out
