"""`fleet proxy status`: the running proxy's pid, listen addresses and errors,
its CA and log, and every route in the table with whether its target answers."""

from __future__ import annotations

import concurrent.futures
import socket
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

from reconciler.routing.process import log_path, read_state, running_pid
from reconciler.routing.table import read_table


@dataclass
class RouteStatus:
    fleet: str
    agent: str
    service: str
    urls: list[str]
    target: str
    healthy: bool | None = None
    engine: str | None = None  # a remote engine's route: `target` is reached through the daemon's link to it


@dataclass
class ProxyStatus:
    running: bool
    pid: int | None
    listening: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ca: str = ""
    log: str = ""
    routes: list[RouteStatus] = field(default_factory=list)
    # engine -> the daemon's ssh link to it: {up, pid, socks, reverse, source, error, restarts, since}
    links: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"format_version": 1, **asdict(self)}


def _tcp_ok(target: str, timeout: float) -> bool:
    u = urlsplit(target)
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _via_link(target: str, link: dict, timeout: float) -> bool:
    """A TCP connect to a remote engine's target through its link's SOCKS forward."""
    import struct

    u = urlsplit(target)
    socks = str(link.get("socks") or "")
    if not link.get("up") or ":" not in socks or not u.hostname:
        return False
    host, _, port = socks.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(b"\x05\x01\x00")
            if s.recv(2) != b"\x05\x00":
                return False
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(u.hostname) + struct.pack(">H", u.port or 80))
            if s.recv(2)[1:2] != b"\x00":
                return False
            s.settimeout(0.3)  # ssh says yes at once and closes when the far end refuses
            try:
                return s.recv(1, socket.MSG_PEEK) != b""
            except socket.timeout:
                return True
    except OSError:
        return False


def status(check: bool = True, timeout: float = 1.0) -> ProxyStatus:
    """The proxy's pid, listen addresses, CA path, and every route in the table
    with (when `check`) whether its target accepts a TCP connection."""
    from reconciler.net.ca import routing_ca  # cryptography loads only when a CA path is shown

    pid = running_pid()
    state = read_state() if pid is not None else None
    if state and state.get("pid") != pid:
        state = None
    table = read_table()
    routes: list[RouteStatus] = []
    for fleet, entry in sorted(table.fleets.items()):
        for r in entry.routes:
            scheme = "https" if r.tls else "http"
            urls = [f"{scheme}://{r.hostname()}:{x.port}" for x in entry.listen]
            routes.append(RouteStatus(fleet, r.agent, r.service, urls, r.target, engine=r.engine))
    links: dict[str, dict] = (state or {}).get("links") or {}

    def healthy(x: RouteStatus) -> bool:
        if x.engine is not None:
            return _via_link(x.target, links.get(x.engine) or {}, timeout)
        return _tcp_ok(x.target, timeout)

    if check and routes:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(routes))) as pool:
            for row, ok in zip(routes, pool.map(healthy, routes)):
                row.healthy = ok
    return ProxyStatus(
        running=pid is not None,
        pid=pid,
        listening=(state or {}).get("listening", []),
        errors=(state or {}).get("errors", {}),
        ca=str(routing_ca().cert_path),
        log=str(log_path()),
        routes=routes,
        links=links,
    )
