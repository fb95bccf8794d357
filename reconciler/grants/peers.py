"""Is this connection coming from the container a proxy credential was issued to?

A proxy credential sits in its agent's environment, so code in the agent can
read it and send it elsewhere. To make it worthless away from its agent, each
credential record names the container it was issued to (its Docker id, bound
right after the container is created, before it starts), and the forward proxy
accepts the credential only on a connection whose source address is one of that
container's addresses, as the engine reports them now:

- the addresses of the container on every network it is attached to
  (`NetworkSettings.Networks`, any network: the default bridge or a fleet
  network), IPv4 and IPv6;
- for an agent of a shared host (`NetworkMode: container:<holder>`), the
  holder's addresses, since it has no network of its own. Agents of one
  shared host share one address, so the proxy cannot tell them apart;
- nothing for a container that is not running, is gone, or shares the
  machine's network (`host`): its credential is refused.

A credential of an agent on a Modal host is bound instead to `loopback:<ip>`
(`loopback_peer`), the 127.x address its host's relay on this machine dials
the forward proxy from (state/relays.py): only connections from that address
may use it.

Addresses change when a container or the engine restarts, so they are never
stored: the engine is asked again when a cached answer is older than `ttl`
seconds, and at once (at most every `min_refresh` seconds per container)
when a connection comes from an address the cache does not list. The engine
is the authority; a failure to ask it refuses the connection (fail closed).
Docker normally hands out addresses in sequence, so an address a
restarted container gave up is rarely another container's a second
later; `ttl` bounds that window anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Callable

log = logging.getLogger("fleet.grants")

Lookup = Callable[[str], set[str]]
LOOPBACK = "loopback:"


def loopback_peer(ip: str) -> str:
    """The identity to bind a credential to when its caller is a local relay dialling from `ip`."""
    return LOOPBACK + ip


def _norm(ip: str) -> str:
    """`::ffff:172.17.0.2` (a dual-stack socket's view) -> `172.17.0.2`."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _networks_of(info: dict) -> set[str]:
    out: set[str] = set()
    for net in ((info.get("NetworkSettings") or {}).get("Networks") or {}).values():
        for key in ("IPAddress", "GlobalIPv6Address"):
            if net and net.get(key):
                out.add(_norm(net[key]))
    return out


def engine_lookup(client_factory: Callable | None = None) -> Lookup:
    """A lookup that asks the local Docker engine (`docker.from_env`)."""
    state: dict = {}

    def api():
        if "api" not in state:
            if client_factory is not None:
                state["api"] = client_factory()
            else:
                import docker

                state["api"] = docker.from_env(timeout=5).api
        return state["api"]

    def lookup(container_id: str) -> set[str]:
        from docker.errors import NotFound

        try:
            info = api().inspect_container(container_id)
        except NotFound:
            return set()
        if not (info.get("State") or {}).get("Running"):
            return set()
        mode = (info.get("HostConfig") or {}).get("NetworkMode") or ""
        if mode.startswith("container:"):
            try:
                holder = api().inspect_container(mode.split(":", 1)[1])
            except NotFound:
                return set()
            if not (holder.get("State") or {}).get("Running"):
                return set()
            return _networks_of(holder)
        if mode == "host":
            return set()  # the machine's own addresses: never a container's identity
        return _networks_of(info)

    return lookup


class Peers:
    """Cached answers to "does address A belong to container C now?"."""

    def __init__(self, lookup: Lookup | None = None, ttl: float = 1.0, min_refresh: float = 0.5) -> None:
        self._lookup = lookup or engine_lookup()
        self.ttl = ttl
        self.min_refresh = min_refresh
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self.lookups = 0  # engine round trips (for tests and figures)

    async def _refresh(self, container_id: str) -> set[str]:
        pending = self._inflight.get(container_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[container_id] = fut
        try:
            self.lookups += 1
            try:
                ips = await asyncio.to_thread(self._lookup, container_id)
            except Exception as exc:  # the engine does not answer: refuse, say why once
                log.error("grants: cannot ask the engine about container %s (%s); refusing its credential",
                          container_id[:12], exc)
                ips = set()
            self._cache[container_id] = (time.monotonic(), ips)
            fut.set_result(ips)
            return ips
        finally:
            self._inflight.pop(container_id, None)
            if not fut.done():
                fut.cancel()

    async def owns(self, container_id: str | None, peer_ip: str | None) -> bool:
        """Whether `peer_ip` is an address of container `container_id` now."""
        if not container_id or not peer_ip:
            return False
        ip = _norm(peer_ip)
        if container_id.startswith(LOOPBACK):  # a relay's own address: nothing to ask the engine
            return ip == container_id[len(LOOPBACK):]
        now = time.monotonic()
        hit = self._cache.get(container_id)
        if hit is not None:
            age = now - hit[0]
            if ip in hit[1] and age < self.ttl:
                return True
            if ip not in hit[1] and age < self.min_refresh:
                return False  # asked a moment ago: no engine call per refused connection
        return ip in await self._refresh(container_id)

    def forget(self, keep: set[str]) -> None:
        """Drop cached containers no credential names any more."""
        for cid in list(self._cache):
            if cid not in keep:
                del self._cache[cid]
