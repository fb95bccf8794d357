"""`fleet grant set|list|rm`: the secrets agents use without ever seeing them.

Thin: each command calls one function of `reconciler.grants.store`. A secret is
read from stdin (or typed without echo at a terminal), or taken from `gh auth
token`; never from a command-line argument, which other users can read.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from reconciler.core.errors import FleetError
from reconciler.grants import store
from reconciler.grants.catalogue import BUILTIN, hosts_of
from reconciler.cli.app import app, console, handles_errors

grant_app = typer.Typer(
    help="Credentials agents use through the grants proxy (stored encrypted; never shown, never in a container).",
    no_args_is_help=True,
)
app.add_typer(grant_app, name="grant")


def _from_gh() -> str:
    gh = shutil.which("gh")
    if gh is None:
        raise FleetError("--from-gh: the GitHub CLI (gh) is not installed or not on PATH")
    try:
        proc = subprocess.run([gh, "auth", "token"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FleetError(f"--from-gh: `gh auth token` failed: {exc}") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        why = (proc.stderr.strip().splitlines() or ["no token"])[0][:200]
        raise FleetError(f"--from-gh: `gh auth token` gave no token ({why}); run `gh auth login` first")
    return proc.stdout


def _read_secret(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"secret for grant {name} (not shown): ")
    return sys.stdin.read(store.MAX_SECRET + 2)


@dataclass(frozen=True)
class GrantRow:
    """One stored grant as `fleet grant list` shows it (`-o json`: these keys, in this order)."""

    name: str
    hosts: tuple[str, ...]
    set_at: str | None
    source: str | None
    builtin: bool
    problem: str | None


def _user_catalogue(file: Optional[Path]) -> dict:
    """User-defined grants of the fleet.yaml in reach (for their hosts), else none."""
    from reconciler.load.loader import default_file, load

    path = file or default_file()
    if not Path(path).is_file():
        return {}
    try:
        return dict(load(path).grants)
    except FleetError:
        return {}


@grant_app.command("set")
@handles_errors
def grant_set(
    name: str = typer.Argument(..., help="The grant (github, anthropic, openai, gitlab, npm, or one from fleet.yaml)."),
    from_gh: bool = typer.Option(False, "--from-gh", help="Take the token of the installed GitHub CLI (`gh auth token`)."),
) -> None:
    """Store a grant's secret, read from stdin (typed without echo at a terminal)."""
    store.check_name(name)
    secret = _from_gh() if from_gh else _read_secret(name)
    store.set_grant(name, secret, source="gh" if from_gh else "stdin")
    hosts = hosts_of(name)
    where = f" (hosts: {', '.join(hosts)})" if hosts else " (hosts come from grants.{} in fleet.yaml)".format(name)
    console().print(f"grant {name} stored{where}", markup=False)


@grant_app.command("list")
@handles_errors
def grant_list(
    output: str = typer.Option("text", "--output", "-o", help="text or json."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="fleet.yaml whose user-defined grants to describe."),
) -> None:
    """Stored grants: names, hosts, when each was set. Never the values."""
    if output not in ("text", "json"):
        raise FleetError(f"--output: expected text or json (found {output!r})")
    user = _user_catalogue(file)
    rows = [
        GrantRow(name=g.name, hosts=tuple(hosts_of(g.name, user)), set_at=g.set_at or None, source=g.source or None,
                 builtin=g.name in BUILTIN, problem=g.problem)
        for g in store.list_grants()
    ]
    if output == "json":
        print(json.dumps({"format_version": 1, "grants": [asdict(r) for r in rows]}, indent=2))
        return
    out = console()
    if not rows:
        out.print("no grants stored; add one with `fleet grant set NAME` (secret on stdin)", markup=False)
        return
    table = Table(box=None, show_edge=False, pad_edge=False)
    for col in ("NAME", "HOSTS", "SET", "FROM"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.name, ", ".join(r.hosts) or "(defined in fleet.yaml)", r.set_at or "-", r.source or "-")
    out.print(table)
    for r in rows:
        if r.problem:
            console(stderr=True).print(f"warning: {r.problem}", markup=False)


@grant_app.command("rm")
@handles_errors
def grant_rm(name: str = typer.Argument(..., help="The grant to remove.")) -> None:
    """Remove a stored grant (agents using it then get a clear error from the proxy)."""
    store.check_name(name)
    if not store.remove(name):
        raise FleetError(f"grant {name} is not stored (stored: {', '.join(sorted(store.stored_names())) or 'none'})")
    console().print(f"grant {name} removed", markup=False)
