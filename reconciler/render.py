"""Rendering of plans, results and status for people (rich) and machines (JSON).

Pure formatting: takes the pipeline's models, returns text or plain data.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .execute import Result
from .model import Desired, Observed, ObservedAgent
from .plan import Action, Plan

FORMAT_VERSION = 1

SYMBOL = {
    "create": ("+", "green"),
    "join": ("+", "green"),
    "replace": ("~", "yellow"),
    "restart": ("~", "yellow"),
    "start": (">", "cyan"),
    "stop": ("=", "magenta"),
    "destroy": ("-", "red"),
    "route": ("*", "blue"),
    "message": (">", "blue"),
}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_lines(plan: Plan, verbose: bool = False, mask_env: bool = False) -> list[Text]:
    lines: list[Text] = []
    order = {"host": 0, "agent": 1, "route": 2}
    # hosts before their agents; destroys last and in reverse (agents, then hosts)
    def key(a: Action) -> tuple:
        return (a.op == "destroy", -order[a.kind] if a.op == "destroy" else order[a.kind], a.name)

    for a in sorted(plan.actions, key=key):
        sym, colour = SYMBOL[a.op]
        t = Text()
        t.append(f"  {sym} {a.op:<8}", style=colour)
        where = f" (on {a.host})" if a.kind == "agent" and a.host else ""
        t.append(f" {a.kind} ", style="dim")
        t.append(a.name, style="bold")
        t.append(where, style="dim")
        t.append(f"  {a.cause}", style="dim")
        lines.append(t)
        if a.op == "replace":
            for c in a.changes:
                secret = mask_env and c.key.startswith("env.")
                before = "***" if secret and c.before is not None else _short(c.before)
                after = "***" if secret and c.after is not None else _short(c.after)
                lines.append(Text(f"        {c.key}: {before} -> {after}", style="dim"))
    if verbose:
        for u in plan.unchanged:
            kind, _, name = u.partition(":")
            lines.append(Text(f"    {'unchanged':<8} {kind} {name}", style="dim"))
    return lines


def print_plan(console: Console, plan: Plan, verbose: bool = False, mask_env: bool = False) -> None:
    if plan.empty:
        n = len([u for u in plan.unchanged if not u.startswith("route:")])
        console.print(f"fleet {plan.fleet} is up to date" + (f" ({n} unchanged)" if n else ""))
        if verbose:
            for line in plan_lines(plan, verbose=True, mask_env=mask_env):
                console.print(line)
        return
    for line in plan_lines(plan, verbose=verbose, mask_env=mask_env):
        console.print(line)
    console.print(Text(plan.summary(), style="bold"))


def print_result(console: Console, plan: Plan, result: Result) -> None:
    for aid, msg in result.failed.items():
        a = plan.get(aid)
        console.print(Text(f"  ✗ {a.op} {a.kind} {a.name}: {msg}", style="red"))
    for aid, msg in result.skipped.items():
        a = plan.get(aid)
        console.print(Text(f"  - {a.op} {a.kind} {a.name}: {msg}", style="yellow"))
    for note in result.notes:
        console.print(Text(f"  note: {note}", style="yellow"))
    n = len(result.done)
    if result.ok:
        console.print(Text(f"fleet {plan.fleet}: {n} action{'s' if n != 1 else ''} done", style="bold green"))
    else:
        console.print(
            Text(
                f"fleet {plan.fleet}: {n} done, {len(result.failed)} failed, {len(result.skipped)} skipped; "
                "run `fleet apply` again to converge from here",
                style="bold red",
            )
        )


class LiveProgress:
    """A rich progress bar over a plan's actions for terminals: finished actions
    scroll above it as lines, the bar shows how many are done and what runs now."""

    def __init__(self, console: Console, plan: Plan):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.running: dict[str, str] = {}
        self.progress = Progress(
            TextColumn("[bold]applying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}", style="dim"), console=console, transient=True,
        )
        self.task = self.progress.add_task("", total=len(plan.actions))

    def __enter__(self) -> "LiveProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def on_event(self, ev: Any) -> None:
        if ev.kind == "start":
            self.running[ev.action.id] = f"{ev.action.op} {ev.action.name}"
        else:
            self.running.pop(ev.action.id, None)
            style = {"done": "green", "failed": "red", "skipped": "yellow"}[ev.kind]
            self.progress.console.print(Text("  " + event_line(ev.kind, ev.action, ev.error), style=style))
            self.progress.advance(self.task)
        shown = ", ".join(list(self.running.values())[:3])
        more = len(self.running) - 3
        self.progress.update(self.task, description=shown + (f" +{more}" if more > 0 else ""))


def print_urls(console: Console, desired: Desired) -> None:
    """Where to reach each running agent's services (end of apply)."""
    from .routing.table import agent_urls

    lines = [
        f"  {name}: " + "  ".join(agent_urls(a, desired.proxy).values())
        for name, a in sorted(desired.agents.items())
        if a.ports and a.enabled
    ]
    if lines:
        console.print(Text("URLs:", style="bold"))
        for line in lines:
            console.print(Text(line))


def event_line(kind: str, action: Action, error: str | None = None) -> str:
    verb = {
        "create": "created", "join": "joined", "replace": "replaced", "restart": "restarted", "start": "started",
        "stop": "stopped", "destroy": "destroyed", "route": "routed", "message": "messaged",
    }[action.op]
    if kind == "done":
        return f"{verb} {action.kind} {action.name}"
    if kind == "failed":
        return f"failed to {action.op} {action.kind} {action.name}: {error}"
    if kind == "skipped":
        return f"skipped {action.op} {action.kind} {action.name}: {error}"
    return f"{action.op} {action.kind} {action.name}..."


# --------------------------------------------------------------------------- status


def _age(created: str | None, now: datetime | None = None) -> str:
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


def agent_ports(desired: Desired, observed: Observed, obs: ObservedAgent | None, name: str) -> list[dict[str, Any]]:
    """Each service of an agent with its container port and published host port."""
    d = desired.agents.get(name)
    services = dict(d.ports) if d else {}
    if obs is not None and not services:
        services = {k: v for k, v in (obs.spec.get("ports") or {}).items()}
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
    return [
        {"service": svc, "container_port": port, "host_port": published.get(port),
         "address": f"{address}:{port}" if address and port not in published else None}
        for svc, port in sorted(services.items())
    ]


def _since(ts: str | None) -> str | None:
    """Docker's 0001-01-01 means never; anything else is kept as given."""
    return None if not ts or ts.startswith("0001-") else ts


def status_rows(
    desired: Desired,
    observed: Observed,
    details: dict[str, dict[str, Any]] | None = None,
    messages: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per agent. `details` (provider facts per container id: restarts,
    exit code, start time) and `messages` (first-message delivery records) are
    optional extras gathered by `pipeline.status_rows`."""
    from .routing.table import agent_urls
    from .workspaces import branch_of

    details = details or {}
    messages = messages or {}
    by_name: dict[str, ObservedAgent] = {}
    for a in observed.agents:
        by_name.setdefault(a.name, a)
    rows = []
    for name in sorted(set(desired.agents) | set(by_name)):
        d = desired.agents.get(name)
        o = by_name.get(name)
        state = o.state if o else ("disabled" if d and not d.enabled else "missing")
        if d is not None and not d.enabled:
            state = "disabled"
        elif d is None:
            state = f"{state} (not in fleet.yaml)"
        elif o and d and o.spec_hash != d.spec_hash:
            state = f"{state} (outdated)"
        info = details.get(o.id, {}) if o else {}
        record = messages.get(name) or {}
        if not (d and d.message):
            message = "-"
        elif o and record.get("container") == o.id:
            message = record.get("state", "pending")
        else:
            message = "pending"
        ws = d.workspace if d else None
        rows.append(
            {
                "agent": name,
                "host": (d.host if d else o.host) or "(private)",
                "provider": d.provider if d else o.provider,
                "state": state,
                "exit_code": info.get("exit_code", o.exit_code if o else None),
                "restarts": info.get("restarts"),
                "started_at": _since(info.get("started_at")) if info.get("running") else None,
                "message": message,
                "urls": agent_urls(d, desired.proxy) if d and d.ports else {},
                "branch": branch_of(ws, name) if ws is not None and ws.mode == "worktree" else None,
                "ports": agent_ports(desired, observed, o, name),
                "created": o.created if o else None,
                "id": o.id[:12] if o else None,
            }
        )
    return rows


def status_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("AGENT", "HOST", "PROVIDER", "STATE", "UP", "RESTARTS", "MESSAGE", "PORTS", "URLS", "AGE"):
        table.add_column(col)
    for r in rows:
        ports = ", ".join(
            f"{p['service']} {p['container_port']}->"
            + (f"127.0.0.1:{p['host_port']}" if p["host_port"] else (p.get("address") or "-"))
            for p in r["ports"]
        )
        state = r["state"]
        style = "green" if state == "running" else ("red" if state.startswith(("exited", "dead", "missing")) else "yellow")
        if state.startswith("exited") and r["exit_code"] is not None and "(" not in state:
            state = f"exited ({r['exit_code']})"
        urls = "\n".join(r.get("urls", {}).values()) or "-"
        if r.get("branch"):
            urls = f"{urls}\nbranch {r['branch']}" if urls != "-" else f"branch {r['branch']}"
        restarts = "-" if r.get("restarts") is None else str(r["restarts"])
        up = _age(r["started_at"]) if r.get("started_at") else "-"
        table.add_row(
            r["agent"], r["host"], r["provider"], Text(state, style=style), up, restarts, r.get("message", "-"),
            ports or "-", urls, _age(r["created"]),
        )
    return table


def status_json(desired: Desired, rows: list[dict[str, Any]]) -> str:
    return json.dumps(
        {"format_version": FORMAT_VERSION, "fleet": desired.fleet, "spec_hash": desired.spec_hash, "agents": rows},
        indent=2,
    )
