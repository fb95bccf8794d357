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


@dataclass
class ProxyStatus:
    running: bool
    pid: int | None
    listening: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    ca: str = ""
    log: str = ""
    routes: list[RouteStatus] = field(default_factory=list)

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
            routes.append(RouteStatus(fleet, r.agent, r.service, urls, r.target))
    if check and routes:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(routes))) as pool:
            for row, ok in zip(routes, pool.map(lambda x: _tcp_ok(x.target, timeout), routes)):
                row.healthy = ok
    return ProxyStatus(
        running=pid is not None,
        pid=pid,
        listening=(state or {}).get("listening", []),
        errors=(state or {}).get("errors", {}),
        ca=str(routing_ca().cert_path),
        log=str(log_path()),
        routes=routes,
    )
