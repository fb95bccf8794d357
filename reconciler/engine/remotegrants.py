"""Grants for Docker agents on a remote engine (`engine: ssh://...`).

The agent's proxy traffic comes back to this machine's forward proxy through
the reverse forward of the proxy daemon's ssh link to that engine
(routing/links.py): it listens on the remote `fleet_agents` gateway at a port
stable for this FLEET_HOME and engine (state/links.py `remote_port_for`), and
the connections it brings back dial the forward proxy from the engine's own
loopback source (`source_for_engine`), the identity the credential is bound to
when it is issued. The token is injected here; the remote side holds only the
proxy URL with its per-agent credential and the CA bundle (copied into the
container before it starts: a bind of this machine's file means nothing there).

`prepare(ctx, agent)` is the remote part of the `credentials issue` action:
it finds the gateway, records the reverse forward for the daemon (links.json),
binds the credential and waits until the link carries it.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time
from contextlib import suppress
from typing import Any

from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.model import DesiredAgent
from reconciler.engine.state import Context
from reconciler.providers.base import Provider, network_of

UP_TIMEOUT = 40.0


def _api(provider: Provider) -> Any:
    api = getattr(provider, "api", None)  # the Docker provider's low-level client (over its one connection)
    if api is None:
        raise FleetError(f"provider {provider.name} is not a Docker engine; grants need one")
    return api


def gateway_of(provider: Provider) -> str:
    """The gateway of the engine's `fleet_agents` network (made when missing):
    where its containers reach the reverse forward."""
    net = network_of(provider)
    if net is None:
        raise FleetError(f"provider {provider.name} has no shared network")
    info = _api(provider).inspect_network(net.ensure_network())
    for cfg in (info.get("IPAM") or {}).get("Config") or []:
        gw = cfg.get("Gateway")
        if gw and ":" not in gw:
            return str(gw)
    raise FleetError(f"the agents' network on {provider.name} has no IPv4 gateway")


def prepare(ctx: Context, agent: DesiredAgent) -> tuple[str, int]:
    """(host, port) the remote agent's HTTPS_PROXY points at, once the daemon's
    link to its engine carries the reverse forward there. The credential is
    bound to the engine's loopback source."""
    from reconciler.grants.inject import bind_credential
    from reconciler.grants.peers import loopback_peer
    from reconciler.routing import daemon
    from reconciler.state.links import remote_port_for, set_reverse, source_for_engine

    engine = agent.engine
    assert engine is not None
    gateway = gateway_of(ctx.provider_of(agent.key))
    port = remote_port_for(engine)
    bind_credential(ctx.fleet, agent.name, loopback_peer(source_for_engine(engine)))
    set_reverse(engine, gateway, port)
    wait_reverse(engine, f"{gateway}:{port}", daemon)
    return gateway, port


def wait_reverse(engine: str, reverse: str, daemon: Any, timeout: float = UP_TIMEOUT) -> None:
    """Tell the daemon (SIGHUP) and wait until its link to `engine` is up with `reverse`."""
    pid = daemon.running_pid()
    if pid is None:
        raise FleetError(f"the fleet proxy stopped; see {daemon.log_path()}")
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    link: dict = {}
    while time.monotonic() < deadline:
        link = ((daemon.read_state() or {}).get("links") or {}).get(engine) or {}
        if link.get("up") and link.get("reverse") == reverse:
            return
        time.sleep(0.05)
    raise ProviderError(f"engine {engine}", f"the proxy's ssh link with the grants reverse forward {reverse} did not "
                        f"come up within {timeout:g}s ({link.get('error') or 'no error yet'}); the remote sshd needs "
                        f"`GatewayPorts clientspecified`; see {daemon.log_path()}")


def copy_bundle(provider: Provider, container_id: str) -> None:
    """Put this machine's CA bundle for agents with grants (system CAs, the
    interception and routing CAs: certificates only) into the created container."""
    from reconciler.grants.trust import CONTAINER_BUNDLE, ensure_bundle

    data = ensure_bundle().read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        parts = CONTAINER_BUNDLE.strip("/").split("/")
        for i in range(1, len(parts)):
            d = tarfile.TarInfo("/".join(parts[:i]))
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(d)
        f = tarfile.TarInfo("/".join(parts))
        f.size, f.mode = len(data), 0o644
        tar.addfile(f, io.BytesIO(data))
    if not _api(provider).put_archive(container_id, "/", buf.getvalue()):
        raise FleetError(f"could not copy the CA bundle into container {container_id[:12]}")
