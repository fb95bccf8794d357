"""The route table compiled for the proxy's hot path.

`RouteIndex` maps, per listen port, each hostname (`<service>.<agent>.localhost`
and the `<agent>.localhost` alias) to a resolved `Target`, and memoises what a
Host header value means, so routing a request is one dict lookup. It is
rebuilt whole on every route-table reload, never edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.routing.table import Route, RouteTable

_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
LOCAL, FOREIGN, UNKNOWN, ROUTED = range(4)  # what a Host header names


@dataclass(frozen=True)
class Target:
    """A route resolved for the hot path."""

    fleet: str
    route: Route
    scheme: str
    host: str
    port: int
    # pooled connections are per key: a router binds one to one port; the same
    # address on two engines is two targets
    key: tuple[str, str, int, int, str]
    host_header: bytes | None  # replaces Host for https targets (tunnels route by it)
    extra_header: bytes  # b"\r\nX-Fleet-Port: N" for a Modal host's port router, else b""

    @property
    def agent(self) -> str:
        return self.route.agent

    @classmethod
    def of(cls, fleet: str, route: Route) -> "Target":
        u = urlsplit(route.target)
        scheme = u.scheme
        host = u.hostname or "127.0.0.1"
        port = u.port or (443 if scheme == "https" else 80)
        return cls(
            fleet=fleet,
            route=route,
            scheme=scheme,
            host=host,
            port=port,
            key=(scheme, host, port, route.inner_port or 0, route.engine or ""),
            host_header=u.netloc.encode("idna") if scheme == "https" else None,
            extra_header=b"\r\nX-Fleet-Port: %d" % route.inner_port if route.inner_port else b"",
        )


class RouteIndex:
    """hostname -> Target per proxy port, built once per table load."""

    def __init__(self, table: RouteTable, ports: list[int]):
        self.table = table
        self.by_port: dict[int, dict[str, Target]] = {}
        for port in ports:
            self.by_port[port] = {name: Target.of(fleet, r) for name, (fleet, r) in table.hostnames(port).items()}
        self._cache: dict[tuple[int, bytes], tuple[int, str, Target | None]] = {}

    def lookup(self, port: int, host: bytes) -> tuple[int, str, Target | None]:
        """(kind, hostname, target) for a Host header value on a listen port;
        memoised per index, so a hot Host costs one dict lookup."""
        key = (port, host)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        hostname = host_name(host.decode("latin-1"))
        t = None
        if hostname in _LOCAL_NAMES:
            kind = LOCAL
        elif not hostname.endswith(".localhost"):
            kind = FOREIGN
        else:
            t = self.by_port.get(port, {}).get(hostname)
            kind = ROUTED if t is not None else UNKNOWN
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[key] = hit = (kind, hostname, t)
        return hit

    def routes(self, port: int) -> list[Target]:
        """The distinct routes on `port` (aliases folded), sorted."""
        seen: dict[tuple[str, str, str], Target] = {}
        for t in self.by_port.get(port, {}).values():
            seen.setdefault((t.fleet, t.route.agent, t.route.service), t)
        return [seen[k] for k in sorted(seen)]


def host_name(host: str) -> str:
    """The host part of a Host header value, lower-cased, without port or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, _, _port = host.partition(":")
    return name.rstrip(".")
