"""What keeps one container of the Docker engine away from another: the
hardening every fleet container gets, the shared network with inter-container
traffic off, and the reuse rule for workspace volumes.

- Every agent and holder runs without CAP_NET_RAW (no raw sockets: no sniffing,
  no ARP spoofing) and with no-new-privileges (setuid binaries cannot raise
  privileges); fleet.yaml's `capabilities:` adds names back, per container.
- Private agents and shared-host holders sit on one bridge network per engine,
  `fleet_agents`, created with `com.docker.network.bridge.enable_icc=false`: a
  container on it cannot open a connection to another one's address. They still
  reach this machine (the routing and forward proxies) through `host-gateway`.
  Agents joined to a holder share its network namespace (so its network).
- A workspace volume is reused only when its labels name this fleet, this host
  and the workspace kind; a volume an older fleet made under its old name is
  adopted when its labels name this fleet and host, so an upgrade keeps it.
"""

from __future__ import annotations

import threading
from typing import Any

from reconciler.core import labels as L
from reconciler.core.capabilities import DROPPED
from reconciler.core.errors import ProviderError

ICC_OPTION = "com.docker.network.bridge.enable_icc"
_net_lock = threading.Lock()


def hardening(capabilities: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """create_host_config keywords every fleet container gets."""
    wanted = set(capabilities)
    out: dict[str, Any] = {"security_opt": ["no-new-privileges"]}
    drop = [c for c in DROPPED if c not in wanted]
    if drop:
        out["cap_drop"] = drop
    if wanted:
        out["cap_add"] = sorted(wanted)
    return out


def _mine(api, name: str) -> list[dict]:
    """The networks named exactly `name` (the name filter matches substrings)."""
    return [n for n in api.networks(names=[name]) if n.get("Name") == name]


def _created(net: dict) -> float:
    """A network's creation time in seconds (RFC 3339 with nanoseconds)."""
    from datetime import datetime

    text = net.get("Created", "")
    head, _, frac = text.partition(".")
    frac = "".join(ch for ch in frac if ch.isdigit())[:6]
    try:
        return datetime.fromisoformat(f"{head}.{frac or '0'}+00:00").timestamp()
    except ValueError:
        return 0.0


def _checked(nets: list[dict], name: str) -> list[dict]:
    """The networks named `name`, oldest first, all fleet's (label and ICC off), or an error."""
    for n in nets:
        if (n.get("Labels") or {}).get(L.NETWORK_LABEL) != "agents" or (n.get("Options") or {}).get(ICC_OPTION) != "false":
            raise ProviderError(
                "network " + name,
                f"a network named {name} exists ({n.get('Id', '')[:12]}) that fleet did not create "
                f"(it needs the label {L.NETWORK_LABEL}=agents and {ICC_OPTION}=false); remove or rename it",
            )
    return sorted(nets, key=lambda n: (_created(n), n.get("Id", "")))


def network_exists(api, name: str = L.NETWORK) -> bool:
    """Observation: a network named `name` exists (one list call)."""
    return bool(_mine(api, name))


def find_network(api, name: str = L.NETWORK) -> str:
    """The id of the shared fleet network, which the plan's `network create`
    made (a container create does not make it)."""
    nets = _mine(api, name)
    if not nets:
        raise ProviderError("network " + name, f"the agents' network {name} does not exist; run `fleet apply` again to create it")
    return _checked(nets, name)[0]["Id"]


def ensure_network(api, name: str = L.NETWORK, grace: float = 60.0) -> str:
    """The id of the shared fleet network, created when missing.

    Two applies racing may each create one (Docker allows duplicate names and
    does not check atomically). Each uses the oldest it sees; a network that
    lost is removed only once it is empty and older than `grace` seconds (a
    racing apply may be putting its first container on it right now). Until
    then both have inter-container traffic off, so isolation holds throughout."""
    import time

    from docker.errors import APIError

    with _net_lock:
        nets = _mine(api, name)
        if not nets:
            try:
                api.create_network(
                    name, driver="bridge", check_duplicate=True,
                    options={ICC_OPTION: "false"}, labels={L.NETWORK_LABEL: "agents"},
                )
            except APIError as exc:
                if exc.status_code != 409:  # 409: another apply made it meanwhile
                    raise ProviderError("network " + name, (exc.explanation or str(exc)).strip()) from None
            nets = _mine(api, name)
        if not nets:
            raise ProviderError("network " + name, "could not create the network")
        nets = _checked(nets, name)
        for loser in nets[1:]:
            if time.time() - _created(loser) < grace:
                continue
            try:
                api.remove_network(loser["Id"])  # refused while a container is on it: fine
            except APIError:
                pass
        return nets[0]["Id"]


def workspace_volume(api, fleet: str, host: str, engine: str | None = None, uploaded: bool = False,
                     who: str | None = None) -> str:
    """The named volume for a shared host without a workspace directory, kept
    across host replacement so the agents' work survives a port change. On an
    engine other than the local one (`engine`) it carries dev.fleet.engine too.
    `uploaded`: the volume a `workspace upload` action filled (a workspace on a
    remote engine; `host` may be a private agent): never created here, a missing
    one is an error (an empty volume would never be uploaded to)."""
    from docker.errors import NotFound

    resource = who or f"host {host}"
    name = L.workspace_volume(fleet, host)
    want = {L.PROJECT: fleet, L.HOST: host, L.KIND: "workspace", **({L.ENGINE: engine} if engine is not None else {})}
    try:
        vol = api.inspect_volume(name)
    except NotFound:
        vol = None
    if vol is None and uploaded:
        raise ProviderError(resource, f"its workspace volume {name} does not exist{f' on {engine}' if engine else ''} "
                                      "(the workspace upload did not run); run `fleet apply` again to upload it")
    if vol is not None:
        lab = vol.get("Labels") or {}
        if any(lab.get(k) != v for k, v in want.items()):
            raise ProviderError(
                resource,
                f"volume {name} exists but is not labelled as this host's workspace ({', '.join(f'{k}={v}' for k, v in want.items())}); "
                "fleet does not mount a volume it did not create: remove or rename it",
            )
        return name
    legacy = L.legacy_workspace_volume(fleet, host)
    try:
        old = api.inspect_volume(legacy) if engine is None else None  # older fleets knew no other engine
    except NotFound:
        old = None
    if old is not None:
        lab = old.get("Labels") or {}
        if lab.get(L.PROJECT) == fleet and lab.get(L.HOST) == host:
            return legacy  # made by an older fleet for this very host: keep its contents
    try:
        api.create_volume(name=name, labels=want)
    except Exception as exc:  # APIError, connection errors
        raise ProviderError(resource, f"cannot create volume {name}: {str(exc).splitlines()[0][:200]}") from None
    return name
