"""Fleet URLs inside agents: `curl "$FLEET_URL_WEB"` works in the container.

On this machine `<svc>.<agent>.localhost` names reach the routing proxy on
loopback. Inside a container loopback is the container's own, so three things
make the same URLs work there, without restarting anyone when routes change:

- The routing proxy also listens on the Docker bridge gateway at its port
  (`routing.daemon.agent_address`, what `host-gateway` maps to).
- Names: each Docker agent gets a fleet-managed hosts file,
  `$FLEET_HOME/agentnet/<fleet>/hosts/<agent>`, bind-mounted read-only at
  `/etc/hosts`: the usual localhost lines, the container's own hostname,
  `fleet-proxy`, and every `<svc>.<agent>.localhost` (and `<agent>.localhost`)
  name of the fleet pointing at the gateway. curl (7.78 and later) answers
  `*.localhost` with loopback itself and never reads /etc/hosts, so it also gets
  `CURL_HOME=/etc/fleet/curl`, a read-only mount of
  `$FLEET_HOME/agentnet/<fleet>/curl/` whose `.curlrc` has a `resolve` line per
  name (an agent's own `~/.curlrc` is then not read).
  The route action rewrites both when the fleet's names change: the hosts file
  in place (a file bind mount pins its inode), the curlrc by rename (the mount
  is its directory), so a name added later resolves in running agents.
- Trust: every agent's `SSL_CERT_FILE` (and curl's, Python's, Node's, git's
  equivalents) points at `/etc/fleet/ca-bundle.crt`, this machine's CAs plus
  the routing CA (plus the interception CA for agents with grants).

Nothing here is part of an agent's spec: hashes, labels and plans are free of
it. Names are derived from fleet.yaml (the desired agents' ports), not from what
runs, so they only change when the file does. Modal agents are not covered: a
sandbox cannot reach this machine's proxy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from reconciler.state.home import fleet_home, write_atomic
from reconciler.core.model import Desired, DesiredAgent

CONTAINER_HOSTS = "/etc/hosts"
CONTAINER_CURL_HOME = "/etc/fleet/curl"
CONTAINER_BUNDLE = "/etc/fleet/ca-bundle.crt"  # the same path grants use
CA_VARS = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")
LOCAL_LINES = (
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
    "fe00::0\tip6-localnet",
    "ff00::0\tip6-mcastprefix",
    "ff02::1\tip6-allnodes",
    "ff02::2\tip6-allrouters",
)


def fleet_dir(fleet: str) -> Path:
    return fleet_home() / "agentnet" / fleet


def hosts_path(fleet: str, agent: str) -> Path:
    return fleet_dir(fleet) / "hosts" / agent


def curl_dir(fleet: str) -> Path:
    return fleet_dir(fleet) / "curl"


def names(desired: Desired) -> list[str]:
    """Every hostname the proxy routes for this fleet's agents (pure)."""
    out: list[str] = []
    for name, a in sorted(desired.agents.items()):
        services = sorted(a.ports)
        out += [f"{svc}.{name}.localhost" for svc in services]
        if len(services) == 1:
            out.append(f"{name}.localhost")
    return out


def hosts_text(hostname: str, gateway: str, fleet_names: list[str]) -> str:
    lines = ["# managed by fleet: rewritten when the fleet's routes change; do not edit", *LOCAL_LINES,
             f"127.0.1.1\t{hostname}", f"{gateway}\tfleet-proxy"]
    for i in range(0, len(fleet_names), 8):  # a few names per line: resolvers cap line length
        lines.append(f"{gateway}\t" + " ".join(fleet_names[i:i + 8]))
    return "\n".join(lines) + "\n"


def curlrc_text(gateway: str, port: int, fleet_names: list[str]) -> str:
    lines = ["# managed by fleet: curl resolves *.localhost to loopback itself; these reach the fleet proxy"]
    lines += [f'resolve = "{n}:{port}:{gateway}"' for n in fleet_names]
    return "\n".join(lines) + "\n"


def _gateway() -> str | None:
    from reconciler.routing.daemon import agent_address

    return agent_address()


def _write_hosts(path: Path, text: str) -> None:
    from reconciler.grants.trust import write_in_place

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_in_place(path, text.encode())


def _write_curlrc(fleet: str, text: str) -> None:
    d = curl_dir(fleet)
    d.mkdir(parents=True, exist_ok=True, mode=0o755)
    os.chmod(d, 0o755)  # read by any user inside the container
    rc = d / ".curlrc"
    try:
        if rc.read_text() == text:
            return
    except OSError:
        pass
    write_atomic(rc, text, mode=0o644)


def container_setup(desired: Desired, agent: DesiredAgent, bundle: bool = True) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, binds) for a Docker agent's container: its hosts file, the
    curlrc directory and (unless `bundle` is False: grants mount their own, which
    includes the routing CA) the CA bundle. Empty when containers cannot reach
    the proxy (no Docker bridge gateway)."""
    gateway = _gateway()
    env: dict[str, str] = {}
    binds: dict[str, Any] = {}
    if bundle:
        from reconciler.grants.trust import ensure_agent_bundle

        binds[str(ensure_agent_bundle())] = {"bind": CONTAINER_BUNDLE, "mode": "ro"}
        env.update({name: CONTAINER_BUNDLE for name in CA_VARS})
    if gateway is None:
        return env, binds
    fleet_names = names(desired)
    hostname = agent.host or agent.name
    path = hosts_path(desired.fleet, agent.name)
    _write_hosts(path, hosts_text(hostname, gateway, fleet_names))
    _write_curlrc(desired.fleet, curlrc_text(gateway, desired.proxy.port, fleet_names))
    binds[str(path)] = {"bind": CONTAINER_HOSTS, "mode": "ro"}
    binds[str(curl_dir(desired.fleet))] = {"bind": CONTAINER_CURL_HOME, "mode": "ro"}
    env["CURL_HOME"] = CONTAINER_CURL_HOME
    return env, binds


def refresh(desired: Desired) -> None:
    """Rewrite the fleet's hosts files and curlrc with its current names (the
    route action): running agents resolve agents added since they started."""
    base = fleet_dir(desired.fleet) / "hosts"
    if not base.is_dir():
        return
    gateway = _gateway()
    if gateway is None:
        return
    fleet_names = names(desired)
    _write_curlrc(desired.fleet, curlrc_text(gateway, desired.proxy.port, fleet_names))
    for path in sorted(base.iterdir()):
        agent = desired.agents.get(path.name)
        if agent is not None:
            _write_hosts(path, hosts_text(agent.host or agent.name, gateway, fleet_names))


def forget(fleet: str, agent: str) -> None:
    """An agent's hosts file goes with its container."""
    try:
        hosts_path(fleet, agent).unlink()
    except FileNotFoundError:
        pass


def forget_fleet(fleet: str) -> None:
    shutil.rmtree(fleet_dir(fleet), ignore_errors=True)
