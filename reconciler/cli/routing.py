"""`fleet proxy ...` and `fleet ca ...`: the routing proxy and the CA behind its HTTPS.

Thin: each command calls one function of `reconciler.routing` and renders it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from reconciler.core.errors import FleetError
from reconciler.cli.app import app, console, handles_errors


def _daemon():
    """The proxy daemon module, imported on use: `fleet validate/diff/...` need
    neither asyncio's server stack nor cryptography."""
    from reconciler.routing import daemon

    return daemon


def _routing_ca():
    from reconciler.net.ca import routing_ca

    return routing_ca()

proxy_app = typer.Typer(
    help="The routing proxy: https://<service>.<agent>.localhost:<port> for every agent port.",
    no_args_is_help=True,
)
ca_app = typer.Typer(help="The local CA behind https://*.localhost (name-constrained to localhost).", no_args_is_help=True)
app.add_typer(proxy_app, name="proxy")
app.add_typer(ca_app, name="ca")

PORT_OPTION = typer.Option(None, "--port", "-p", min=1, max=65535, help="Also listen on this port (remembered).")
BIND_OPTION = typer.Option("127.0.0.1", "--bind", help="Address for --port.")


def _listening(state: dict) -> str:
    return ", ".join(f"{x['bind']}:{x['port']}" for x in state.get("listening", [])) or "nothing"


@proxy_app.command("start")
@handles_errors
def proxy_start(port: Optional[int] = PORT_OPTION, bind: str = BIND_OPTION) -> None:
    """Start the proxy in the background (no-op when it runs)."""
    was = _daemon().running_pid()
    state = _daemon().start(port=port, bind=bind)
    out = console()
    verb = "already running" if was == state["pid"] else "started"
    out.print(f"fleet proxy {verb} (pid {state['pid']}), listening on {_listening(state)}", markup=False)
    out.print(f"CA: {state.get('ca')}  (trust it once: fleet ca trust)", markup=False)


@proxy_app.command("stop")
@handles_errors
def proxy_stop() -> None:
    """Stop the background proxy (routes stay in the table for its next start)."""
    pid = _daemon().stop()
    console().print(f"fleet proxy stopped (pid {pid})" if pid else "fleet proxy is not running", markup=False)


@proxy_app.command("hosts")
@handles_errors
def proxy_hosts(
    file: Optional[Path] = typer.Argument(None, metavar="[FILE]", help="fleet.yaml (default ./fleet.yaml, or $FLEET_FILE)."),
) -> None:
    """Print /etc/hosts lines for this fleet's hostnames (for clients that do not resolve *.localhost)."""
    from reconciler.load.loader import load
    from reconciler.routing.hostsfile import hosts_lines

    desired = load(file)
    lines = hosts_lines(desired)
    if not lines:
        console(stderr=True).print(f"fleet {desired.fleet} has no agent with ports: no hostnames", markup=False)
        return
    typer.echo("\n".join(lines))


@proxy_app.command("status")
@handles_errors
def proxy_status(
    output: str = typer.Option("text", "--output", "-o", help="text or json"),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the TCP health check of targets."),
) -> None:
    """Listening ports, CA path and every route with its health."""
    if output not in ("text", "json"):
        raise FleetError(f"--output must be text or json (found {output!r})")
    st = _daemon().status(check=not no_check)
    if output == "json":
        typer.echo(json.dumps(st.as_dict(), indent=2))
        return
    out = console()
    if st.running:
        listening = ", ".join(f"{x['bind']}:{x['port']}" for x in st.listening) or "nothing yet"
        out.print(f"fleet proxy running (pid {st.pid}), listening on {listening}", markup=False)
    else:
        out.print("fleet proxy is not running (fleet proxy start, or fleet apply with ports)", markup=False)
    for addr, msg in sorted(st.errors.items()):
        out.print(f"cannot listen on {addr}: {msg}", markup=False)
    out.print(f"CA: {st.ca}", markup=False)
    out.print(f"log: {st.log}", markup=False)
    for engine, link in sorted(st.links.items()):  # the daemon's ssh links to remote engines
        what = f"up (ssh pid {link.get('pid')})" if link.get("up") else f"DOWN: {link.get('error') or 'connecting'}"
        back = f", grants back from {link['reverse']}" if link.get("reverse") else ""
        out.print(f"engine {engine}: link {what}{back}", markup=False)
    if not st.routes:
        out.print("no routes", markup=False)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("FLEET", "AGENT", "SERVICE", "URL", "TARGET", "HEALTH"):
        table.add_column(col, overflow="fold")  # URLs are copied: never cut with an ellipsis
    for r in st.routes:
        health = "-" if r.healthy is None else ("ok" if r.healthy else "DOWN")
        target = f"{r.target} via {r.engine}" if r.engine else r.target
        table.add_row(r.fleet, r.agent, r.service, " ".join(r.urls), target, health)
    if not out.is_terminal:
        out.width = 240  # piped: whole lines
    out.print(table)


@proxy_app.command("run")
@handles_errors
def proxy_run(port: Optional[int] = PORT_OPTION, bind: str = BIND_OPTION) -> None:
    """Run the proxy in the foreground, logging to the terminal (for debugging)."""
    raise typer.Exit(_daemon().run_foreground(port=port, bind=bind))


@ca_app.command("path")
@handles_errors
def ca_path() -> None:
    """Print the CA certificate's path (the CA is created on first use)."""
    ca = _routing_ca().ensure()
    typer.echo(str(ca.cert_path))


DEBIAN_DIR = Path("/usr/local/share/ca-certificates")
DEBIAN_NAME = "fleet-localhost-ca.crt"


def trust_commands(cert: Path, system: str | None = None) -> list[str]:
    """The shell commands that make this OS (and its browsers) trust `cert`."""
    system = system or platform.system()
    if system == "Darwin":
        return [f"sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {cert}"]
    if Path("/etc/pki/ca-trust/source/anchors").is_dir() and not DEBIAN_DIR.is_dir():
        return [
            f"sudo cp {cert} /etc/pki/ca-trust/source/anchors/{DEBIAN_NAME}",
            "sudo update-ca-trust",
        ]
    return [
        f"sudo cp {cert} {DEBIAN_DIR / DEBIAN_NAME}",
        "sudo update-ca-certificates",
    ]


@ca_app.command("trust")
@handles_errors
def ca_trust(install: bool = typer.Option(False, "--install", help="Run the commands (Linux, as root).")) -> None:
    """Print (or with --install run) the commands that trust the CA on this OS."""
    ca = _routing_ca().ensure()
    cert = ca.cert_path
    cmds = trust_commands(cert)
    out = console()
    if not install:
        out.print("# The CA is name-constrained to localhost and *.localhost: it cannot vouch for any other site.", markup=False)
        out.print("# Trust it system-wide:", markup=False)
        for c in cmds:
            out.print(c, markup=False)
        if platform.system() == "Linux":
            out.print("# Firefox and Chrome on Linux keep their own store (libnss3-tools):", markup=False)
            out.print(
                f'certutil -d sql:$HOME/.pki/nssdb -A -t "C,," -n "fleet localhost CA" -i {cert}', markup=False
            )
        return
    if platform.system() != "Linux":
        raise FleetError("--install runs the Linux commands only; run the printed command above yourself")
    if os.geteuid() != 0:
        raise FleetError("--install needs root: run `sudo fleet ca trust --install`, or the printed commands")
    if DEBIAN_DIR.is_dir() and shutil.which("update-ca-certificates"):
        shutil.copyfile(cert, DEBIAN_DIR / DEBIAN_NAME)
        os.chmod(DEBIAN_DIR / DEBIAN_NAME, 0o644)
        run = ["update-ca-certificates"]
    elif Path("/etc/pki/ca-trust/source/anchors").is_dir() and shutil.which("update-ca-trust"):
        shutil.copyfile(cert, Path("/etc/pki/ca-trust/source/anchors") / DEBIAN_NAME)
        run = ["update-ca-trust"]
    else:
        raise FleetError("no update-ca-certificates or update-ca-trust here; install ca-certificates first")
    proc = subprocess.run(run, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FleetError(f"{run[0]} failed: {(proc.stderr or proc.stdout).strip()}")
    out.print(f"trusted {cert} system-wide ({run[0]})", markup=False)
