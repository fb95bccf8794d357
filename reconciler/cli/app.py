"""The typer application and the error boundary every command shares."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from reconciler.core.errors import FleetError

app = typer.Typer(
    name="fleet",
    help="Declarative reconciler for fleets of coding agents: fleet.yaml -> Docker and Modal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

P = ParamSpec("P")
R = TypeVar("R")


def console(stderr: bool = False) -> Console:
    """A rich console that is plain with NO_COLOR or without a TTY."""
    no_color = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, no_color=no_color, highlight=False, soft_wrap=True)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn every user-facing error into its lines on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except FleetError as exc:
            err = console(stderr=True)
            for line in exc.lines():
                err.print(line, markup=False)
            raise typer.Exit(exc.exit_code)
        except KeyboardInterrupt:
            console(stderr=True).print("interrupted", markup=False)
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit, BrokenPipeError):
            raise  # a closed pipe (`fleet diff -o json | head`): main() ends quietly
        except OSError as exc:  # a read-only or full $FLEET_HOME: one line, whatever the command
            from reconciler.state.home import unwritable_line

            said = unwritable_line(exc)
            if os.environ.get("FLEET_DEBUG"):
                raise
            if said is None:
                _unexpected(exc)
            console(stderr=True).print(said, markup=False)
            raise typer.Exit(1)
        except Exception as exc:  # a bug or an unwrapped engine error: one line, not a traceback
            if os.environ.get("FLEET_DEBUG"):
                raise
            _unexpected(exc)

    return wrapper


def _unexpected(exc: BaseException) -> NoReturn:
    first = (str(exc).splitlines() or [""])[0][:300]
    console(stderr=True).print(
        f"fleet: unexpected error: {exc.__class__.__name__}: {first} "
        "(this is a bug in fleet; FLEET_DEBUG=1 shows the traceback)",
        markup=False,
    )
    raise typer.Exit(1)


def _version(value: bool) -> None:
    if value:
        from reconciler import __version__

        print(f"fleet {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print fleet's version and exit."),
) -> None:
    """Declarative reconciler for fleets of coding agents: fleet.yaml -> Docker and Modal."""


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `fleet status | head`
        sys.stderr.close()
        sys.exit(0)
