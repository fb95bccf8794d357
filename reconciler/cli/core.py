"""Core commands: validate, diff, apply, status, destroy, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from .. import pipeline, render
from ..errors import FleetError
from ..execute import Event
from ..load import default_file, load, validate_file
from ..lock import fleet_lock
from ..reconcile import Options
from ..spec import json_schema
from .app import app, console, handles_errors

FileArg = typer.Argument(None, help="fleet.yaml to use (default ./fleet.yaml, or $FLEET_FILE).", show_default=False)
FileOpt = typer.Option(None, "--file", "-f", help="fleet.yaml to use (same as the argument).", show_default=False)


def _path(arg: Optional[Path], opt: Optional[Path]) -> Path:
    if arg is not None and opt is not None and arg != opt:
        raise FleetError(f"two files given ({arg} and {opt}); pass one")
    return arg or opt or default_file()


def _is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@app.command()
@handles_errors
def validate(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
) -> None:
    """Check fleet.yaml offline (no Docker, no Modal): every problem, with its line."""
    path = _path(file, file_opt)
    _, problems = validate_file(path)
    if output == "json":
        print(json.dumps({"format_version": render.FORMAT_VERSION, "file": str(path), "valid": not problems,
                          "problems": [p.as_dict() for p in problems]}, indent=2))
        raise typer.Exit(1 if problems else 0)
    if problems:
        err = console(stderr=True)
        for p in problems:
            err.print(str(p), markup=False)
        raise typer.Exit(1)
    console().print(f"{path}: valid")


@app.command()
@handles_errors
def diff(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List unchanged resources too."),
    no_prune: bool = typer.Option(False, "--no-prune", help="Keep what fleet.yaml no longer names."),
) -> None:
    """Show what `fleet apply` would do, and why."""
    snap = pipeline.plan_file(_path(file, file_opt), Options(prune=not no_prune))
    render.print_plan(console(), snap.plan, verbose=verbose)


@app.command()
@handles_errors
def apply(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before replacing or destroying."),
    no_prune: bool = typer.Option(False, "--no-prune", help="Keep what fleet.yaml no longer names."),
    parallel: int = typer.Option(8, "--parallel", "-p", min=1, max=64, help="Actions run at once."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List unchanged resources too."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep going: re-apply on every save, heal what breaks."),
    resync: Optional[float] = typer.Option(None, "--resync", metavar="SECONDS", help="--watch: full re-observe period (default 30)."),
    down_on_exit: bool = typer.Option(False, "--down-on-exit", help="--watch: destroy the fleet when the watcher stops."),
) -> None:
    """Make the world match fleet.yaml: show the plan, then carry it out."""
    if watch or resync is not None or down_on_exit:
        from ..watch import run_watch

        raise typer.Exit(run_watch(_path(file, file_opt), watch=watch, resync=resync, down_on_exit=down_on_exit,
                                   prune=not no_prune, parallel=parallel, dry_run=dry_run, verbose=verbose))
    out = console()
    desired = load(_path(file, file_opt))
    with fleet_lock(desired.fleet, on_wait=lambda m: console(stderr=True).print(m, markup=False)):
        snap = pipeline.plan(desired, Options(prune=not no_prune))
        plan = snap.plan
        render.print_plan(out, plan, verbose=verbose)
        if plan.empty or dry_run:
            return
        if plan.disruptive and not yes and _is_tty():
            if not typer.confirm("Replace or destroy as shown?", default=False):
                out.print("nothing changed")
                raise typer.Exit(1)
        result = pipeline.apply_plan(snap, parallel=parallel, on_event=_progress(out))
        render.print_result(out, plan, result)
        if not result.ok:
            raise typer.Exit(1)


def _progress(out):
    def on_event(ev: Event) -> None:
        if ev.kind == "start":
            return
        style = {"done": "green", "failed": "red", "skipped": "yellow"}[ev.kind]
        out.print(Text("  " + render.event_line(ev.kind, ev.action, ev.error), style=style))

    return on_event


@app.command()
@handles_errors
def status(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
) -> None:
    """A table of agents: state, host, ports, age."""
    desired = load(_path(file, file_opt))
    observed = pipeline.observe(desired.fleet, pipeline.providers_of(desired))
    rows = render.status_rows(desired, observed)
    if output == "json":
        print(render.status_json(desired, rows))
        return
    out = console()
    if not rows:
        out.print(f"fleet {desired.fleet} has no agents")
        return
    out.print(render.status_table(rows))


@app.command()
@handles_errors
def destroy(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    parallel: int = typer.Option(8, "--parallel", "-p", min=1, max=64),
    purge_workspaces: bool = typer.Option(False, "--purge-workspaces", help="Also remove shared-host workspace volumes."),
) -> None:
    """Remove everything this fleet owns (and nothing else)."""
    out = console()
    desired = load(_path(file, file_opt))
    with fleet_lock(desired.fleet, on_wait=lambda m: console(stderr=True).print(m, markup=False)):
        snap = pipeline.destroy_snapshot(desired)
        plan = snap.plan
        if plan.empty:
            out.print(f"fleet {desired.fleet} has nothing running")
        else:
            render.print_plan(out, plan)
            if not yes and _is_tty() and not typer.confirm(f"Destroy everything fleet {desired.fleet} owns?", default=False):
                out.print("nothing changed")
                raise typer.Exit(1)
            result = pipeline.apply_plan(snap, parallel=parallel, on_event=_progress(out))
            render.print_result(out, plan, result)
            if not result.ok:
                raise typer.Exit(1)
        if purge_workspaces:
            from ..providers.base import get_provider

            from .. import workspaces

            for vol in get_provider("docker").remove_volumes(desired.fleet):
                out.print(f"  - removed volume {vol}")
            for path in workspaces.purge(desired.fleet):
                out.print(f"  - removed workspace {path}")


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of fleet.yaml (generated from the models)."""
    print(json.dumps(json_schema(), indent=2))
