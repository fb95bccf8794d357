"""Commands for running agents: logs, exec, attach, message."""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.text import Text

from reconciler.engine import operate
from reconciler.core.errors import FleetError
from reconciler.state.messages import typed
from reconciler.cli.app import app, console, handles_errors

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta"]
FileOpt = typer.Option(None, "--file", "-f", help="fleet.yaml to use (default ./fleet.yaml, or $FLEET_FILE).", show_default=False)


@app.command()
@handles_errors
def logs(
    agents: Optional[List[str]] = typer.Argument(None, help="Agents to show (default: all)."),
    follow: bool = typer.Option(False, "--follow", help="Keep printing new output."),
    follow_short: bool = typer.Option(False, "-F", hidden=True),
    tail: Optional[int] = typer.Option(None, "--tail", "-n", min=0, help="Only the last N lines of each agent."),
    since: Optional[str] = typer.Option(None, "--since", help="Only output since a duration ago (10m, 2h) or an ISO time."),
    all_agents: bool = typer.Option(False, "--all", "-a", help="Every agent of the fleet."),
    network: bool = typer.Option(False, "--network", help="Requests through the grants proxy instead (method, host, path, status, grant)."),
    file: Optional[Path] = FileOpt,
) -> None:
    """An agent's output; several agents (or --all) are prefixed with their names."""
    follow = follow or follow_short
    if network:  # grants: the forward proxy's per-agent request log
        from reconciler.grants.netlog import show

        return show(file, list(agents or []), all_agents, follow=follow, tail=tail)
    desired, observed = operate.context(file)
    targets = operate.resolve_many(desired, observed, list(agents or []), all_agents)
    since_ts = operate.parse_since(since)
    out = console()
    if len(targets) == 1:
        t = targets[0]
        for chunk in t.logs(follow=follow, tail=tail, since=since_ts):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        return
    width = max(len(t.agent.name) for t in targets)
    lines: "queue.Queue[tuple[int, bytes | None]]" = queue.Queue(maxsize=1000)

    def pump(i: int, t: operate.ResolvedAgent) -> None:
        buf = b""
        try:
            for chunk in t.logs(follow=follow, tail=tail, since=since_ts):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    lines.put((i, line))
            if buf:
                lines.put((i, buf))
        except FleetError as exc:
            lines.put((i, f"[{exc}]".encode()))
        finally:
            lines.put((i, None))

    for i, t in enumerate(targets):
        threading.Thread(target=pump, args=(i, t), daemon=True).start()
    open_streams = len(targets)
    while open_streams:
        i, line = lines.get()
        if line is None:
            open_streams -= 1
            continue
        name = targets[i].agent.name
        text = Text(f"{name:<{width}} | ", style=COLOURS[i % len(COLOURS)])
        text.append(line.decode("utf-8", "replace").rstrip("\r"))
        out.print(text, markup=False, highlight=False)


@app.command(name="exec", context_settings={"allow_interspersed_args": False})
@handles_errors
def exec_(
    agent: str = typer.Argument(..., help="The agent to run the command in."),
    cmd: List[str] = typer.Argument(..., help="One string, run by /bin/sh -c; or, after --, a program and its arguments run as given."),
    workdir: Optional[str] = typer.Option(None, "--workdir", "-w", help="Working directory (default: the agent's)."),
    env: List[str] = typer.Option([], "--env", "-e", help="KEY=VALUE, repeatable."),
    interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open."),
    tty: bool = typer.Option(False, "--tty", "-t", help="Allocate a terminal (use -it for a shell)."),
    file: Optional[Path] = FileOpt,
) -> None:
    """Run a command in an agent's container; exits with the command's exit code.

    `fleet exec impl "git status && git log -1"` runs the string through /bin/sh -c;
    `fleet exec impl -- git status` runs the program and its arguments as given (no shell).
    """
    cmd = shell_or_argv(list(cmd))
    desired, observed = operate.context(file)
    t = operate.resolve(desired, observed, agent, running=True)
    if tty and not sys.stdin.isatty():
        raise FleetError("-t needs a terminal on stdin; drop -t to pipe input")
    code = t.exec(cmd, workdir=workdir, env=operate.parse_env(env), interactive=interactive, tty=tty)
    raise typer.Exit(code)


def shell_or_argv(cmd: list[str]) -> list[str]:
    """After `--`: the argv as given. One string alone: a shell command line
    (`fleet exec impl "git status"`), as `docker compose exec` users expect."""
    if cmd and cmd[0] == "--":
        argv = cmd[1:]
    elif len(cmd) == 1:
        argv = ["/bin/sh", "-c", cmd[0]]
    else:
        argv = cmd
    if not argv or (len(argv) == 3 and argv[:2] == ["/bin/sh", "-c"] and not argv[2].strip()):
        raise FleetError('no command given; usage: fleet exec AGENT "SHELL COMMAND" or fleet exec AGENT -- CMD [ARGS...]')
    return argv


@app.command()
@handles_errors
def attach(
    agent: str = typer.Argument(..., help="The agent whose terminal to join."),
    detach_keys: str = typer.Option(operate.DETACH_KEYS, "--detach-keys", help="Keys that detach, Docker's notation: ctrl-<a-z>, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or one character, comma-separated."),
    file: Optional[Path] = FileOpt,
) -> None:
    """Join an agent's own terminal, starting with its recent output. Detach with
    Ctrl-P Ctrl-Q (the agent keeps running); if the agent ends meanwhile, says so
    and exits with its exit code, as `docker attach` does."""
    operate.parse_detach_keys(detach_keys)  # a bad --detach-keys is refused before anything happens
    if not sys.stdin.isatty():
        raise FleetError("attach needs a terminal; to send text use `fleet message AGENT TEXT`")
    desired, observed = operate.context(file)
    t = operate.resolve(desired, observed, agent, running=True)
    before = t.details()
    err = console(stderr=True)
    err.print(f"attached to {agent} (detach: {detach_keys})", markup=False)
    end = t.attach(detach_keys, replay=operate.terminal_size()[0])
    if end.detached:
        err.print(f"\r\ndetached from {agent}; it keeps running", markup=False)
        return
    restart = t.desired_agent.restart if t.desired_agent else None
    text, code = attach_outcome(agent, end, before, _settled(t, before), restart)
    err.print("\r\n" + text, markup=False)
    raise typer.Exit(code)


def _settled(t: operate.ResolvedAgent, before: dict[str, Any]) -> dict[str, Any]:
    """The agent's facts once the engine has caught up with the end of the
    attach (its state changes a moment after the stream closes)."""
    import time

    deadline = time.monotonic() + 3
    while True:
        after = t.details()
        if _ended(before, after) or time.monotonic() > deadline:
            return after
        time.sleep(0.2)


def _ended(before: dict, after: dict) -> bool:
    return (not after.get("running")) or after.get("restarts") != before.get("restarts") \
        or after.get("started_at") != before.get("started_at")


def attach_outcome(agent: str, end, before: dict, after: dict, restart: str | None) -> tuple[str, int]:
    """What to tell the user when an attach ended without a detach, and the exit
    code of `fleet attach`: the truth about the agent, from its facts after."""
    code = end.exit_code if end.exit_code is not None else after.get("exit_code")
    shown = f"exit code {code}" if code is not None else "exit code unknown"
    if not after:
        return f"{agent} is gone (its container was removed)", 1
    if not _ended(before, after):
        return f"the connection to {agent} closed; it is still running", 0
    if after.get("running") or after.get("state") == "restarting":
        return f"{agent} exited ({shown}) and was restarted (restart: {restart or 'always'}); it is running again", code or 0
    return f"{agent} exited ({shown}); it is not running (restart: {restart or 'always'})", code or 0


@app.command()
@handles_errors
def message(
    agent: str = typer.Argument(..., help="The agent to message."),
    text: str = typer.Argument(..., help="The text, or - to read it from stdin."),
    file: Optional[Path] = FileOpt,
) -> None:
    """Type TEXT into an agent's terminal followed by Enter, as a person would."""
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise FleetError("the message is empty; nothing sent")
    desired, observed = operate.context(file)
    t = operate.resolve(desired, observed, agent, running=True)
    t.send_input(typed(text))
    console().print(f"sent {len(text)} characters to {agent}", markup=False)


@app.command()
@handles_errors
def pull(
    agent: str = typer.Argument(..., help="The agent whose working directory to copy."),
    dest: Optional[Path] = typer.Argument(None, help="Where to put it (default ./<agent>-workspace)."),
    file: Optional[Path] = FileOpt,
) -> None:
    """Copy an agent's /workspace to this machine (Docker and Modal agents alike)."""
    from reconciler.engine.pull import pull as pull_workspace

    desired, observed = operate.context(file)
    t = operate.resolve(desired, observed, agent)
    target = dest if dest is not None else Path(f"{agent}-workspace")
    got = pull_workspace(desired.fleet, t.agent, target, protect=(desired.file,))
    console().print(f"pulled {got.files} files ({got.bytes} bytes) from {agent}:/workspace into {got.dest}", markup=False)
    for name in got.kept:
        console(stderr=True).print(f"kept your {desired.file.name}: not replaced by the agent's {name}", markup=False)
