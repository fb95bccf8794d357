"""What `fleet status` knows about each agent, as data, and that data as columns.

Rows are typed data, `StatusRow` (the JSON document prints them as they are:
`null` for "none", plain states, separate booleans; field order is the key
order of `fleet status -o json`); every display string ("(private)",
"running (outdated)", "-") is made here, at the edge, by `state_text` and
`status_lines`.

The table is plain columns, never truncated: piped, every cell is printed in
full on one line per agent (so `fleet status | grep auth-host` works, the way
`docker ps` and `kubectl get` behave). On a terminal too narrow for every column,
the columns worth least are dropped first; the agent, its state and its URLs
always stay, and a line still too long is left for the terminal to wrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field
from rich.cells import cell_len
from rich.text import Text

from reconciler.core.frozen import FrozenDict, FrozenMap
from reconciler.core.model import Desired, Frozen, Observed, ObservedAgent, Provider

MessageState = Literal["pending", "delivered", "failed"]
MESSAGE_STATES: tuple[MessageState, ...] = ("pending", "delivered", "failed")
COLUMNS = ("AGENT", "HOST", "PROVIDER", "STATE", "UP", "RESTARTS", "MESSAGE", "PORTS", "URLS", "AGE")
# dropped in this order when a terminal is too narrow; AGENT, STATE and URLS always stay
DROP_ORDER = ("AGE", "PROVIDER", "RESTARTS", "UP", "PORTS", "MESSAGE", "HOST")
GAP = "   "


def age(created: str | None, now: datetime | None = None) -> str:
    if not created:
        return "-"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    secs = int(((now or datetime.now(timezone.utc)) - then).total_seconds())
    if secs < 60:
        return f"{max(secs, 0)}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"{secs // 86400}d{(secs % 86400) // 3600}h"


class PortRow(Frozen):
    """One service of an agent: its container port and where it is reachable."""

    service: str
    container_port: int
    host_port: int | None  # published on 127.0.0.1 (Docker); None: not published
    # IP:port on the Docker bridge, for an agent of a shared Docker host (its holder publishes nothing)
    address: str | None = None


class StatusRow(Frozen):
    """One agent as `fleet status` knows it (schemas/status-output.schema.json).

    state: what the provider reports (running, exited, created, restarting,
    paused, dead) or "missing" (no container); outdated: its spec differs from
    fleet.yaml; in_file: fleet.yaml names it; enabled: false for `enabled: false`;
    host: the shared host's name, None for a private one; message: None without
    a first message, else pending | delivered | failed."""

    agent: str
    host: str | None
    provider: Provider
    state: str
    outdated: bool
    in_file: bool
    enabled: bool
    # stopped with `fleet stop`: apply leaves it stopped until `fleet start`
    stopped_by_user: bool
    exit_code: int | None
    restarts: int | None
    started_at: str | None
    message: MessageState | None
    urls: FrozenMap[str, str] = Field(default_factory=FrozenDict)  # service -> URL through the routing proxy
    branch: str | None
    ports: tuple[PortRow, ...]
    created: str | None
    id: str | None  # the first 12 characters of the container id
    # the Docker engine it runs on (`engine:`); None: the local one (left out of the JSON)
    engine: str | None = None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"engine"} if self.engine is None else None)


def agent_ports(desired: Desired, observed: Observed, obs: ObservedAgent | None, name: str) -> tuple[PortRow, ...]:
    """Each service of an agent with its container port and published host port."""
    d = desired.agents.get(name)
    services: Mapping[str, int] = d.ports if d else {}
    if obs is not None and not services:
        services = obs.spec.get("ports") or {}
    published: dict[int, int] = {}
    address: str | None = None  # a shared Docker host publishes nothing: its agents are at its bridge address
    if obs is not None:
        if obs.host:
            for h in observed.hosts:
                if h.name == obs.host:
                    published = dict(h.ports)
                    address = h.address
        else:
            published = dict(obs.ports)
    return tuple(
        PortRow(service=svc, container_port=port, host_port=published.get(port),
                address=f"{address}:{port}" if address and port not in published else None)
        for svc, port in sorted(services.items())
    )


def _since(ts: str | None) -> str | None:
    """Docker's 0001-01-01 means never; anything else is kept as given."""
    return None if not ts or ts.startswith("0001-") else ts


def status_rows(
    desired: Desired,
    observed: Observed,
    details: Mapping[str, Mapping[str, Any]] | None = None,
    messages: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[StatusRow]:
    """One row of data per agent. `details` (provider facts per container id:
    restarts, exit code, start time) and `messages` (first-message delivery
    records) are optional extras gathered by `engine.observe.status_facts`."""
    from reconciler.core.reconcile import user_stopped
    from reconciler.routing.table import agent_urls
    from reconciler.state.workspaces import branch_of

    details = details or {}
    messages = messages or {}
    by_name: dict[str, ObservedAgent] = {}
    for a in observed.agents:
        by_name.setdefault(a.name, a)
    rows = []
    for name in sorted(set(desired.agents) | set(by_name)):
        d = desired.agents.get(name)
        o = by_name.get(name)
        info = details.get(o.id, {}) if o else {}
        record = messages.get(name) or {}
        message: MessageState | None
        if not (d and d.message):
            message = None
        elif o and record.get("container") == o.id and record.get("state") in MESSAGE_STATES:
            message = record["state"]
        else:
            message = "pending"
        ws = d.workspace if d else None
        if d is not None:
            host, provider, engine = d.host, d.provider, d.engine
        else:
            assert o is not None  # every name comes from fleet.yaml or from observation
            host, provider, engine = o.host, o.provider, o.engine
        rows.append(
            StatusRow(
                agent=name,
                host=host or None,
                provider=provider,
                # an engine that did not answer: what runs there is not known
                state=o.state if o else ("unknown" if engine in observed.unreachable else "missing"),
                engine=engine,
                outdated=bool(o and d and o.spec_hash != d.spec_hash),
                in_file=d is not None,
                enabled=d.enabled if d is not None else True,
                stopped_by_user=bool(o and d and d.enabled and user_stopped(d, o)),
                exit_code=info.get("exit_code", o.exit_code if o else None),
                restarts=info.get("restarts"),
                started_at=_since(info.get("started_at")) if info.get("running") else None,
                message=message,
                urls=agent_urls(d, desired.proxy) if d and d.ports else {},
                branch=branch_of(ws, name) if ws is not None and ws.mode == "worktree" else None,
                ports=agent_ports(desired, observed, o, name),
                created=o.created if o else None,
                id=o.id[:12] if o else None,
            )
        )
    return rows


def state_text(row: StatusRow) -> str:
    """The state as people read it: `exited (3)`, `running (outdated)`,
    `disabled`, `running (not in fleet.yaml)`."""
    if not row.enabled:
        return "disabled"
    if row.stopped_by_user:
        return "stopped (fleet stop)"
    state = row.state
    if state == "exited" and row.exit_code is not None:
        state = f"exited ({row.exit_code})"
    if not row.in_file:
        return f"{state} (not in fleet.yaml)"
    if row.outdated:
        return f"{state} (outdated)"
    return state


def state_style(row: StatusRow) -> str:
    if row.stopped_by_user:
        return "magenta"  # on purpose, not a failure
    if not row.enabled or row.outdated or not row.in_file:
        return "yellow"
    if row.state == "running":
        return "green"
    return "red" if row.state in ("exited", "dead", "missing") else "yellow"


def _cells(r: StatusRow) -> dict[str, list[str]]:
    """Each column's text for one row; a cell may hold several values (URLs)."""
    ports = [
        f"{p.service} {p.container_port}->" + (f"127.0.0.1:{p.host_port}" if p.host_port else (p.address or "-"))
        for p in r.ports
    ]
    urls = list(r.urls.values())
    if r.branch:
        urls.append(f"branch {r.branch}")
    return {
        "AGENT": [r.agent],
        "HOST": [r.host or "(private)"],
        "PROVIDER": [r.provider if r.engine is None else r.engine],
        "STATE": [state_text(r)],
        "UP": [age(r.started_at) if r.started_at else "-"],
        "RESTARTS": ["-" if r.restarts is None else str(r.restarts)],
        "MESSAGE": [r.message or "-"],
        "PORTS": ports or ["-"],
        "URLS": urls or ["-"],
        "AGE": [age(r.created)],
    }


def status_lines(rows: list[StatusRow], width: int | None = None) -> Text:
    """The status table as text. `width` None (piped): every column, each row on
    one line, several values in a cell joined by ", ". A terminal `width`: the
    lowest-value columns dropped until the rows fit, several values of a cell on
    lines of their own under it."""
    cells = [_cells(r) for r in rows]
    piped = width is None
    if piped:
        for c in cells:
            for col in COLUMNS:
                c[col] = [", ".join(c[col])]
    columns = list(COLUMNS)

    def widths(cols: list[str]) -> dict[str, int]:
        return {col: max([cell_len(col)] + [cell_len(v) for c in cells for v in c[col]]) for col in cols}

    if width is not None:
        for drop in DROP_ORDER:
            w = widths(columns)
            if sum(w.values()) + len(GAP) * (len(columns) - 1) <= width:
                break
            columns.remove(drop)
    w = widths(columns)
    lines: list[Text] = []

    def line(values: dict[str, str], styles: dict[str, str] | None = None) -> None:
        text = Text()
        for col in columns:
            value = values.get(col, "")
            text.append(value, style=(styles or {}).get(col, ""))
            text.append(" " * (w[col] - cell_len(value)) + GAP)
        text.rstrip()
        lines.append(text)

    line({col: col for col in columns}, {col: "bold" for col in columns})
    for r, c in zip(rows, cells):
        height = max(len(c[col]) for col in columns)
        for i in range(height):
            values = {col: (c[col][i] if i < len(c[col]) else "") for col in columns}
            line(values, {"STATE": state_style(r)} if i == 0 else None)
    return Text("\n").join(lines)
