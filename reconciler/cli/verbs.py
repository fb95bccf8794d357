"""Per-agent verbs and fleet-wide listing: stop, start, restart, ls, --version."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from reconciler.engine import operate
from reconciler.engine import pipeline
from reconciler.engine.execute import Event
from reconciler.engine.verbs import Verb
from reconciler.view import render
from reconciler.cli.app import app, console, handles_errors

FileOpt = typer.Option(None, "--file", "-f", help="fleet.yaml to use (default ./fleet.yaml, or $FLEET_FILE).", show_default=False)
AllOpt = typer.Option(False, "--all", "-a", help="Every enabled agent of the fleet.")


def _run_verb(verb: Verb, agents: list[str], all_agents: bool, file: Optional[Path]) -> None:
    out = console()
    snap = operate.verb_snapshot(file, verb, agents, all_agents)
    if verb == "stop":
        names = operate.remember(snap, verb, agents, all_agents)
    else:
        names = [want.name for want, _ in operate.select(snap, verb, agents, all_agents)]
    if snap.plan.empty:
        state = "stopped" if verb == "stop" else "running"
        out.print(f"{', '.join(names)}: already {state}; nothing to do", markup=False)
    else:
        render.print_plan(out, snap.plan)
        result = pipeline.apply_plan(snap, on_event=lambda ev: _event(out, ev))
        render.print_result(out, snap.plan, result)
        if not result.ok:
            raise typer.Exit(1)
    if verb != "stop":
        operate.remember(snap, verb, agents, all_agents)
    if verb == "stop":
        who = "it stays" if len(names) == 1 else "they stay"
        out.print(f"{who} stopped until `fleet start {' '.join(names)}` (apply and --watch leave stopped agents "
                  "stopped; a change to an agent's spec in fleet.yaml runs it again)", markup=False)


def _event(out: Console, ev: Event) -> None:
    if ev.kind == "start":
        return
    style = {"done": "green", "failed": "red", "skipped": "yellow"}[ev.kind]
    out.print(Text("  " + render.event_line(ev.kind, ev.action, ev.error), style=style))


@app.command()
@handles_errors
def stop(
    agents: Optional[List[str]] = typer.Argument(None, help="Agents to stop.", show_default=False),
    all_agents: bool = AllOpt,
    file: Optional[Path] = FileOpt,
) -> None:
    """Stop agents and keep their containers; apply and --watch leave them stopped until `fleet start`."""
    _run_verb("stop", list(agents or []), all_agents, file)


@app.command()
@handles_errors
def start(
    agents: Optional[List[str]] = typer.Argument(None, help="Agents to start.", show_default=False),
    all_agents: bool = AllOpt,
    file: Optional[Path] = FileOpt,
) -> None:
    """Start agents stopped with `fleet stop` (or exited); apply keeps them running again."""
    _run_verb("start", list(agents or []), all_agents, file)


@app.command()
@handles_errors
def restart(
    agents: Optional[List[str]] = typer.Argument(None, help="Agents to restart.", show_default=False),
    all_agents: bool = AllOpt,
    file: Optional[Path] = FileOpt,
) -> None:
    """Restart agents in their containers (a stopped one is started); neighbours are untouched."""
    _run_verb("restart", list(agents or []), all_agents, file)


class LsOutput(str, Enum):
    text = "text"
    json = "json"


@app.command("ls")
@handles_errors
def ls(
    output: LsOutput = typer.Option(LsOutput.text, "--output", "-o", case_sensitive=False, help="text or json"),
) -> None:
    """Every fleet on this machine's engine (and Modal), from labels: no fleet.yaml needed."""
    from reconciler.engine.fleets import list_fleets

    fleets, notes = list_fleets()
    if output is LsOutput.json:
        from reconciler.gitops.output import LS_FORMAT_VERSION

        print(json.dumps({"format_version": LS_FORMAT_VERSION, "fleets": [f.as_json() for f in fleets], "notes": notes},
                         indent=2))
        return
    out = console()
    err = console(stderr=True)
    for note in notes:
        err.print(note, markup=False)
    if not fleets:
        out.print("no fleets on this machine")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("FLEET", "AGENTS", "RUNNING", "STATES", "HOSTS", "PROVIDERS"):
        table.add_column(col)
    for f in fleets:
        states = ", ".join(f"{n} {s}" for s, n in f.states.items()) or "-"
        table.add_row(f.fleet, str(f.agents), str(f.running), states, str(f.hosts), ",".join(f.providers))
    out.print(table)
