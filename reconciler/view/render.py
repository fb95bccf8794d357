"""Rendering of plans, results and status for people (rich) and machines (JSON).

Pure formatting: takes the pipeline's models, returns text or plain data.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

from reconciler.core.model import Desired, Observed, split_key
from reconciler.core.plan import Action, Plan
from reconciler.engine.events import Event, EventKind, Result
from reconciler.view.status import StatusRow, agent_ports, state_text, status_rows, status_lines  # noqa: F401  (status lives there)

SYMBOL: dict[str, tuple[str, str]] = {
    "create": ("+", "green"),
    "join": ("+", "green"),
    "replace": ("~", "yellow"),
    "restart": ("~", "yellow"),
    "start": (">", "cyan"),
    "stop": ("=", "magenta"),
    "destroy": ("-", "red"),
    "route": ("*", "blue"),
    "message": (">", "blue"),
    "issue": ("+", "green"),
    "revoke": ("-", "red"),
    # host side effects (core/effects_hosts.py)
    "build": ("+", "green"),
    "prepare": ("+", "green"),
    "upload": ("+", "green"),  # a workspace copied to a remote engine's volume
    "snapshot": ("*", "cyan"),
    "release": ("-", "dim"),
    "purge": ("-", "red"),
}
LATE_OPS = ("release", "purge")  # shown after the destroys they follow


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def plan_lines(plan: Plan, verbose: bool = False, mask_env: bool = False) -> list[Text]:
    lines: list[Text] = []
    order = {"image": -1, "network": -1, "workspace": -1, "host": 0, "credentials": 1, "agent": 1, "route": 2}
    # images and the network go first; hosts before their agents; destroys last and
    # in reverse (agents, then hosts), then what follows them (workspaces released, volumes purged)
    def key(a: Action) -> tuple[bool, bool, int, str]:
        rank = order.get(a.kind, 3)
        late = a.op in LATE_OPS
        return (a.op == "destroy" or late, late, -rank if a.op == "destroy" else rank, a.name)

    for a in sorted(plan.actions, key=key):
        sym, colour = SYMBOL.get(a.op, ("*", "white"))
        t = Text()
        t.append(f"  {sym} {a.op:<8}", style=colour)
        engine = split_key(a.provider)[1]
        where = f" (on {a.host})" if a.kind == "agent" and a.host else ""
        if engine is not None and a.kind in ("host", "agent") and not a.host:
            where = f" (on {engine})"
        elif engine is not None and a.kind not in ("host", "agent"):
            where = f" (on {engine})"
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
    for name in plan.stopped:
        lines.append(Text(f"  = stopped  agent {name}  stopped by `fleet stop`; left stopped (`fleet start {name}` starts it)", style="magenta"))
    if verbose:
        for u in plan.unchanged:
            kind, _, name = u.partition(":")
            lines.append(Text(f"    {'unchanged':<8} {kind} {name}", style="dim"))
    return lines


def print_warnings(console: Console, plan: Plan) -> None:
    for w in plan.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))


def print_plan(console: Console, plan: Plan, verbose: bool = False, mask_env: bool = False) -> None:
    print_warnings(console, plan)
    if plan.empty:
        n = len([u for u in plan.unchanged if not u.startswith("route:")])
        dark = f"; engine{'s' if len(plan.unreachable) > 1 else ''} {', '.join(sorted(plan.unreachable))} not reached" if plan.unreachable else ""
        console.print(f"fleet {plan.fleet} is up to date" + (f" ({n} unchanged)" if n else "") + dark)
        if verbose or plan.stopped:
            for line in plan_lines(plan, verbose=verbose, mask_env=mask_env):
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

    def on_event(self, ev: Event) -> None:
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


def running_after(plan: Plan, result: Result, observed: Observed | None) -> set[str]:
    """Agents that run once `result` of `plan` is in: the ones an action just
    (re)started, and the ones left alone that were running already. A failed or
    skipped agent, a stopped or disabled one, is not among them."""
    ups = {"create", "join", "replace", "start", "restart"}
    acted = {a.name: a.id in result.done and a.op in ups for a in plan.actions if a.id == f"agent:{a.name}"}
    out = {n for n, ok in acted.items() if ok}
    for o in (observed.agents if observed is not None else ()):
        if o.name not in acted and o.state == "running":
            out.add(o.name)
    return out


def print_urls(console: Console, desired: Desired, running: set[str] | None = None) -> None:
    """Where to reach each running agent's services (end of apply). `running`:
    only these agents (None: every enabled agent)."""
    from reconciler.routing.table import agent_urls

    lines = [
        f"  {name}: " + "  ".join(agent_urls(a, desired.proxy).values())
        for name, a in sorted(desired.agents.items())
        if a.ports and a.enabled and (running is None or name in running)
    ]
    if lines:
        console.print(Text("URLs:", style="bold"))
        for line in lines:
            console.print(Text(line))


PAST = {
    "create": "created", "join": "joined", "replace": "replaced", "restart": "restarted", "start": "started",
    "stop": "stopped", "destroy": "destroyed", "route": "routed", "message": "messaged",
    "issue": "issued", "revoke": "revoked",
}


def event_line(kind: EventKind | str, action: Action, error: str | None = None) -> str:
    verb = PAST.get(action.op, f"{action.op} done:")
    if kind == "done":
        return f"{verb} {action.kind} {action.name}"
    if kind == "failed":
        return f"failed to {action.op} {action.kind} {action.name}: {error}"
    if kind == "skipped":
        return f"skipped {action.op} {action.kind} {action.name}: {error}"
    return f"{action.op} {action.kind} {action.name}..."


# --------------------------------------------------------------------------- status
# The rows are data (statusview.py); this is their text form for `fleet status`.


def fleet_status_rows(desired: Desired) -> list[StatusRow]:
    """`fleet status`: observe through the engine, make the rows here."""
    from reconciler.engine.observe import status_facts

    facts = status_facts(desired)
    return status_rows(facts.desired, facts.observed, facts.details, facts.messages)


def status_table(rows: list[StatusRow], width: int | None = None) -> Text:
    """Plain columns, never truncated: `width` None when piped, the terminal's
    width otherwise (low-value columns dropped to fit, never the URLs)."""
    return status_lines(rows, width)

