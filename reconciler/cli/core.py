"""Core commands: validate, diff, plan, apply, status, destroy, schema, fmt."""

from __future__ import annotations

import difflib
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import click
import typer
from rich.text import Text
from typer.core import TyperCommand

_USAGE_ERRORS: tuple[type[Exception], ...] = (click.UsageError,)
try:  # recent typer vendors its own click; its usage errors are not click's
    from typer._click.exceptions import UsageError as _TyperUsageError

    _USAGE_ERRORS += (_TyperUsageError,)
except ImportError:  # pragma: no cover - older typer uses click itself
    pass

from reconciler.gitops import output as machine
from reconciler.engine import pipeline
from reconciler.view import render
from reconciler.gitops import savedplan
from reconciler.core import targeting
from reconciler.core.errors import FleetError, display_path
from reconciler.core.model import Desired
from reconciler.engine.events import Event
from reconciler.load.loader import default_file, load, read_document, validate_file
from reconciler.state.lock import fleet_lock
from reconciler.core.reconcile import Options
from reconciler.load.schemajson import fleet_schema as json_schema
from reconciler.cli.app import app, console, handles_errors

FileArg = typer.Argument(None, help="fleet.yaml to use (default ./fleet.yaml, or $FLEET_FILE).", show_default=False)
FileOpt = typer.Option(None, "--file", "-f", help="fleet.yaml to use (same as the argument).", show_default=False)


def _path(arg: Optional[Path], opt: Optional[Path]) -> Path:
    if arg is not None and opt is not None and arg != opt:
        raise FleetError(f"two files given ({arg} and {opt}); pass one")
    return arg or opt or default_file()


def _is_tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


class Output(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


class ValidateOutput(str, Enum):
    text = "text"
    json = "json"


class ExitCodeCommand(TyperCommand):
    """With `--exit-code`, 2 means "changes pending"; a usage error (which click
    reports with 2) must then exit 1 like every other error."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        detailed = "--exit-code" in args
        try:
            return super().parse_args(ctx, args)
        except _USAGE_ERRORS as exc:
            if detailed:  # click declares exit_code a class variable; this one error exits 1
                setattr(exc, "exit_code", 1)
            raise


OutputOpt = typer.Option(Output.text, "--output", "-o", case_sensitive=False, help="text, json (docs/output-format.md) or markdown (a PR comment).")
MaskEnvOpt = typer.Option(False, "--mask-env", help="Show env values as *** (text, json and markdown).")
TargetOpt = typer.Option(None, "--target", "-t", metavar="AGENT", help="Only this agent and what it needs (repeatable).", show_default=False)
ReplaceOpt = typer.Option(None, "--replace", metavar="AGENT", help="Replace this agent even if unchanged (repeatable).", show_default=False)
ExitCodeOpt = typer.Option(False, "--exit-code", help="Exit 0 when in sync, 2 when changes are pending, 1 on error.")
NoPruneOpt = typer.Option(False, "--no-prune", help="Keep what fleet.yaml no longer names.")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="List unchanged resources too.")


def _snapshot(desired, opts: Options, check_grants: bool = True) -> pipeline.Snapshot:
    """Observe and reconcile, then check --target/--replace names (nothing has
    changed yet when a name is wrong)."""
    snap = pipeline.plan(desired, opts, check_grants=check_grants)
    targeting.check(desired, snap.observed, opts)
    return snap


def _show_plan(snap: pipeline.Snapshot, output: Output, opts: Options, mask_env: bool, verbose: bool) -> None:
    if output is Output.json:
        print(machine.plan_json(snap.plan, snap.desired, opts, mask_env=mask_env))
    elif output is Output.markdown:
        print(machine.plan_markdown(snap.plan, snap.desired, opts, mask_env=mask_env), end="")
    else:
        out = console()
        render.print_plan(out, snap.plan, verbose=verbose, mask_env=mask_env)
        _target_note(out, opts)


def _target_note(out, opts: Options) -> None:
    if opts.targets:
        names = ", ".join(sorted(opts.targets))
        out.print(Text(f"note: limited to --target {names} and what it needs; other changes are not shown", style="yellow"))


@app.command()
@handles_errors
def validate(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    output: ValidateOutput = typer.Option(ValidateOutput.text, "--output", "-o", case_sensitive=False, help="text or json"),
) -> None:
    """Check fleet.yaml offline (no Docker, no Modal): every problem, with its line."""
    path = _path(file, file_opt)
    try:
        _, problems = validate_file(path)
    except FleetError as exc:  # no such file, a directory, unreadable: JSON too when asked for
        if output is not ValidateOutput.json:
            raise
        print(json.dumps({"format_version": machine.VALIDATE_FORMAT_VERSION, "file": str(path), "valid": False,
                          "problems": [{"file": display_path(path), "line": None, "column": None, "key": "",
                                        "message": str(exc)}]}, indent=2))
        raise typer.Exit(1)
    if output is ValidateOutput.json:
        print(json.dumps({"format_version": machine.VALIDATE_FORMAT_VERSION, "file": str(path), "valid": not problems,
                          "problems": [p.as_dict() for p in problems]}, indent=2))
        raise typer.Exit(1 if problems else 0)
    if problems:
        err = console(stderr=True)
        for p in problems:
            err.print(str(p), markup=False)
        raise typer.Exit(1)
    console().print(f"{path}: valid")


@app.command(cls=ExitCodeCommand)
@handles_errors
def diff(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    output: Output = OutputOpt,
    mask_env: bool = MaskEnvOpt,
    target: Optional[List[str]] = TargetOpt,
    replace: Optional[List[str]] = ReplaceOpt,
    exit_code: bool = ExitCodeOpt,
    verbose: bool = VerboseOpt,
    no_prune: bool = NoPruneOpt,
) -> None:
    """Show what `fleet apply` would do, and why (--exit-code: 0 in sync, 2 pending, 1 error)."""
    opts = targeting.options(not no_prune, target, replace)
    snap = _snapshot(load(_path(file, file_opt)), opts, check_grants=False)
    _show_plan(snap, output, opts, mask_env, verbose)
    if exit_code and not snap.plan.empty:
        raise typer.Exit(2)


@app.command("plan", cls=ExitCodeCommand)
@handles_errors
def plan_command(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    out_path: Optional[Path] = typer.Option(
        None, "--out", metavar="PLAN.json", help="Save the plan; `fleet apply PLAN.json` then does exactly this.", show_default=False
    ),
    output: Output = OutputOpt,
    mask_env: bool = MaskEnvOpt,
    target: Optional[List[str]] = TargetOpt,
    replace: Optional[List[str]] = ReplaceOpt,
    exit_code: bool = ExitCodeOpt,
    verbose: bool = VerboseOpt,
    no_prune: bool = NoPruneOpt,
) -> None:
    """Compute the plan, show it, and with --out save it for `fleet apply PLAN.json`."""
    path = _path(file, file_opt)
    if out_path is not None and out_path.exists() and out_path.resolve() == path.resolve():
        raise FleetError(f"--out {out_path} is the fleet.yaml itself; pick another file (e.g. plan.json)")
    opts = targeting.options(not no_prune, target, replace)
    desired = load(path)
    snap = _snapshot(desired, opts)
    if out_path is not None:
        savedplan.write(out_path, savedplan.make(desired, snap.observed, snap.plan, opts))
    _show_plan(snap, output, opts, mask_env, verbose)
    if out_path is not None:
        note = console(stderr=output is not Output.text)
        note.print(f"Saved the plan to {out_path}; `fleet apply {out_path}` carries out exactly this plan.", markup=False)
    if exit_code and not snap.plan.empty:
        raise typer.Exit(2)


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
    allow_mass_destroy: bool = typer.Option(
        False, "--allow-mass-destroy", help="--watch: apply saves that destroy more than half of the agents without asking."
    ),
    target: Optional[List[str]] = TargetOpt,
    replace: Optional[List[str]] = ReplaceOpt,
    fleet_name: Optional[str] = typer.Option(
        None, "--fleet", metavar="NAME", help="Refuse to act unless the fleet (or the saved plan's fleet) is NAME.", show_default=False
    ),
) -> None:
    """Make the world match fleet.yaml, or carry out a saved plan (`fleet apply plan.json`)."""
    saved = _saved_plan_arg(file, file_opt)
    if saved is not None:
        plan_path, data, other = saved
        if target or replace or no_prune or watch or resync is not None or down_on_exit or allow_mass_destroy:
            raise FleetError(
                "a saved plan is applied exactly as it was made: --target, --replace, --no-prune and --watch "
                "cannot change it (pass them to `fleet plan --out`, or apply fleet.yaml)"
            )
        _apply_saved(console(), plan_path, data, other, fleet_name, parallel, dry_run, verbose)
        return
    if (target or replace) and (watch or resync is not None or down_on_exit):
        raise FleetError("--target and --replace apply once; they cannot be combined with --watch")
    if watch or resync is not None or down_on_exit or allow_mass_destroy:
        from reconciler.watch.loop import run_watch

        if allow_mass_destroy and not watch:
            raise FleetError("--allow-mass-destroy only applies to --watch (a plain apply shows the plan and asks on a terminal)")
        raise typer.Exit(run_watch(_path(file, file_opt), watch=watch, resync=resync, down_on_exit=down_on_exit,
                                   prune=not no_prune, parallel=parallel, dry_run=dry_run, verbose=verbose,
                                   allow_mass_destroy=allow_mass_destroy))
    out = console()
    opts = targeting.options(not no_prune, target, replace)
    desired = load(_path(file, file_opt))
    savedplan.check_fleet(desired.fleet, fleet_name, "--fleet", what=display_path(desired.file))
    with fleet_lock(desired.fleet, on_wait=lambda m: console(stderr=True).print(m, markup=False)):
        snap = _snapshot(desired, opts)
        plan = snap.plan
        render.print_plan(out, plan, verbose=verbose)
        _target_note(out, opts)
        if dry_run:
            return
        if not plan.empty:
            if plan.disruptive and not yes and _is_tty():
                if not typer.confirm("Replace or destroy as shown?", default=False):
                    out.print("nothing changed")
                    raise typer.Exit(1)
            _execute(out, snap, parallel)
        _not_reached(snap, opts.targets)


def _not_reached(snap: pipeline.Snapshot, targets: frozenset[str] = frozenset()) -> None:
    """An engine that did not answer (one a --target runs on): the rest was applied, but
    the fleet is not known to match the file, so exit 1 (as a failed action), naming it."""
    dark = sorted(e for e in snap.plan.unreachable
                  if not targets or any((a := snap.desired.agents.get(t)) is not None and a.engine == e for t in targets))
    if dark:
        console(stderr=True).print(
            f"fleet {snap.plan.fleet}: engine{'s' if len(dark) > 1 else ''} {', '.join(dark)} did not answer: what runs there was "
            "neither checked nor changed (everything else was applied); run `fleet apply` again once it answers",
            markup=False)
        raise typer.Exit(1)


def _execute(out, snap: pipeline.Snapshot, parallel: int) -> None:
    """Carry out a plan with progress, print the result; exit 1 if anything failed.
    On a terminal a live bar shows what runs now; otherwise one line per event."""
    if out.is_terminal and not os.environ.get("NO_COLOR"):
        with render.LiveProgress(out, snap.plan) as live:
            result = pipeline.apply_plan(snap, parallel=parallel, on_event=live.on_event)
    else:
        result = pipeline.apply_plan(snap, parallel=parallel, on_event=_progress(out))
    render.print_result(out, snap.plan, result)
    render.print_urls(out, snap.desired, render.running_after(snap.plan, result, snap.observed))
    if not result.ok:
        raise typer.Exit(1)


def _saved_plan_arg(file: Optional[Path], file_opt: Optional[Path]):
    """(plan path, its JSON, the other file given) when a saved plan was passed
    (recognised by its content, whatever its name); None otherwise."""
    for candidate, other in ((file, file_opt), (file_opt, file)):
        if candidate is None:
            continue
        data = savedplan.sniff(candidate)
        if data is not None:
            return candidate, data, other
    return None


def _apply_saved(out, path: Path, data: dict, other: Optional[Path], fleet_name: Optional[str], parallel: int,
                 dry_run: bool, verbose: bool) -> None:
    """Apply exactly a saved plan: fleet.yaml is not read again. Refused when the
    plan is for another fleet or version, or when the world changed since."""
    saved = savedplan.read(path, data)
    savedplan.check_fleet(saved.fleet, fleet_name, "--fleet")
    cross = other or (Path(os.environ["FLEET_FILE"]) if os.environ.get("FLEET_FILE") else None)
    if cross is not None:  # only its `fleet:` name is read, to refuse a plan for another fleet
        doc, _, _ = read_document(cross)
        name = doc.get("fleet") if isinstance(doc, dict) else None
        if not isinstance(name, str):
            raise FleetError(f"cannot read the fleet name from {display_path(cross)} to check the saved plan against it; nothing changed")
        savedplan.check_fleet(saved.fleet, name, f"the fleet of {display_path(cross)}")
    from reconciler.grants.store import check_stored

    check_stored(saved.desired)  # as for a plain apply: refuse before anything changes
    from reconciler.routing.sync import check_proxy_port

    check_proxy_port(saved.desired)  # its proxy port must be free (or our own proxy's)
    with fleet_lock(saved.fleet, on_wait=lambda m: console(stderr=True).print(m, markup=False)):
        observed = pipeline.observe(saved.fleet, pipeline.providers_of(saved.desired))
        savedplan.check_fresh(saved, observed)
        savedplan.check_location(path, saved, observed)
        savedplan.check_builds(saved)
        snap = pipeline.Snapshot(saved.desired, observed, saved.plan)
        out.print(f"Saved plan {display_path(path)} for fleet {saved.fleet} (made {saved.created}); fleet.yaml is not read", markup=False)
        render.print_plan(out, saved.plan, verbose=verbose)
        if saved.plan.empty or dry_run:
            return
        _execute(out, snap, parallel)


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
    output: Output = OutputOpt,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place every 2 s (Ctrl-C to stop)."),
) -> None:
    """A table of agents: state, uptime, restarts, first message, ports, URLs, age."""
    desired = load(_path(file, file_opt))
    if watch:
        _watch_status(desired)
        return
    rows = render.fleet_status_rows(desired)
    if output is Output.json:
        print(machine.status_json(desired, rows))
        return
    if output is Output.markdown:
        print(machine.status_markdown(desired.fleet, rows), end="")
        return
    out = console()
    if not rows:
        out.print(f"fleet {desired.fleet} has no agents")
        return
    # piped: every cell in full, one line per agent; a terminal: fitted to its width
    out.print(render.status_table(rows, out.width if out.is_terminal else None), crop=False)
    for engine in sorted({r.engine for r in rows if r.state == "unknown" and r.engine}):
        out.print(Text(f"engine {engine} did not answer: the state of its agents is unknown (`fleet diff` says why)",
                       style="yellow"))


def _watch_status(desired: Desired) -> None:
    import time

    from rich.live import Live

    out = console()
    def table():
        return render.status_table(render.fleet_status_rows(desired), out.width if out.is_terminal else None)

    with Live(table(), console=out, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(2)
                live.update(table(), refresh=True)
        except KeyboardInterrupt:
            pass


@app.command()
@handles_errors
def destroy(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (needed without a terminal)."),
    parallel: int = typer.Option(8, "--parallel", "-p", min=1, max=64),
    purge_workspaces: bool = typer.Option(False, "--purge-workspaces", help="Also remove shared-host workspace volumes and workspace copies."),
    fleet_name: Optional[str] = typer.Option(
        None, "--fleet", metavar="NAME",
        help="Destroy fleet NAME from its labels alone (its file may be gone); with a file, refuse unless it is NAME.",
        show_default=False,
    ),
) -> None:
    """Remove everything this fleet owns (and nothing else)."""
    out = console()
    desired = _destroy_target(file, file_opt, fleet_name)
    if not yes and not _is_tty():
        raise FleetError(
            f"fleet destroy removes every agent and host of fleet {desired.fleet}: pass --yes to confirm "
            "(there is no terminal to ask on); nothing changed"
        )
    with fleet_lock(desired.fleet, on_wait=lambda m: console(stderr=True).print(m, markup=False)):
        snap = pipeline.destroy_snapshot(desired, purge_volumes=purge_workspaces)
        plan = snap.plan
        if plan.empty:
            render.print_warnings(out, plan)
            out.print(f"fleet {desired.fleet} has nothing running" + (" that fleet could reach" if plan.unreachable else ""))
        else:
            render.print_plan(out, plan)
            if not yes and not typer.confirm(f"Destroy everything fleet {desired.fleet} owns?", default=False):
                out.print("nothing changed")
                raise typer.Exit(1)
            result = pipeline.apply_plan(snap, parallel=parallel, on_event=_progress(out))
            kept = [n for n in result.notes if n.startswith("kept workspace of ")] if purge_workspaces else []
            if kept:  # the plan's purge actions removed them: say that, not "kept"
                result.notes = [n for n in result.notes if n not in kept]
            render.print_result(out, plan, result)
            if not result.ok:
                raise typer.Exit(1)
            from reconciler.state import stops

            stops.purge(desired.fleet)
        if plan.unreachable:  # not all gone: say so in the exit code, as a failed destroy would
            raise typer.Exit(1)


def _destroy_target(file: Optional[Path], file_opt: Optional[Path], fleet_name: Optional[str]) -> Desired:
    """The fleet to destroy: from its file, or with --fleet NAME from labels alone."""
    if fleet_name is None:
        return load(_path(file, file_opt))
    import re

    from reconciler.load.schema import DNS_LABEL

    if len(fleet_name) > 63 or not re.match(DNS_LABEL, fleet_name):
        raise FleetError(f"--fleet: {fleet_name!r} is not a fleet name (a lowercase DNS label)")
    if file is not None or file_opt is not None:
        desired = load(_path(file, file_opt))
        savedplan.check_fleet(desired.fleet, fleet_name, "--fleet", what=display_path(desired.file))
        return desired
    return Desired(fleet=fleet_name, file=Path(f"<fleet {fleet_name}>"))


@app.command()
@handles_errors
def schema() -> None:
    """Print the JSON Schema of fleet.yaml (generated from the models)."""
    print(json.dumps(json_schema(), indent=2))


@app.command()
@handles_errors
def fmt(
    file: Optional[Path] = FileArg,
    file_opt: Optional[Path] = FileOpt,
    check: bool = typer.Option(False, "--check", help="Change nothing; exit 1 and name the file if it would change."),
    show_diff: bool = typer.Option(False, "--diff", help="Print what would change as a unified diff; the file is not touched."),
) -> None:
    """Rewrite fleet.yaml in canonical key order and style, keeping comments."""
    from reconciler.gitops import fmt as formatter

    path = _path(file, file_opt)
    shown = display_path(path)
    _, problems = validate_file(path)
    if problems:
        err = console(stderr=True)
        for p in problems:
            err.print(str(p), markup=False)
        err.print(f"{shown}: not formatted: fix these problems first (fleet validate)", markup=False)
        raise typer.Exit(1)
    text = path.read_text(encoding="utf-8-sig")
    new = formatter.format_text(text)
    if show_diff:  # like `black --diff`: print, never write
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), shown, shown))
        if check and new != text:
            raise typer.Exit(1)
        return
    if check:
        if new != text:
            print(f"would reformat {shown}")
            raise typer.Exit(1)
        print(f"{shown} is formatted")
        return
    if new == text:
        print(f"{shown} left unchanged")
        return
    formatter.write(path, new)
    print(f"reformatted {shown}")
