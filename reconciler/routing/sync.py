"""Keeping the route table in step with the fleet: the consumer side of the
pipeline for routing.

`observe_routes` reads this fleet's current entry (part of observation);
`apply_routes` carries out the plan's route action: it writes the routes the
engine computed with `core.routes.routes_to_write` (from the execution state:
no re-observation) atomically, then makes sure the proxy runs and waits until
it serves the written revision of the table, so `apply` returns only once its
URLs answer as planned; `remove_routes` drops the fleet's entry and stops the
proxy once no fleet has any. Nothing here decides which routes there are.
"""

from __future__ import annotations

from typing import Any, Sequence

from reconciler.core.errors import FleetError
from reconciler.core.model import Desired, ProxySettings
from reconciler.core.routes import Route
from reconciler.routing import table


def observe_routes(fleet: str) -> tuple[tuple[Route, ...] | None, bool]:
    """This fleet's routes in the table, and whether the proxy serving them runs
    (a reboot leaves the table and stops the proxy)."""
    entry = table.read_table().fleets.get(fleet)
    if entry is None:
        return None, True
    from reconciler.routing.daemon import running_pid

    return tuple(entry.routes), running_pid() is not None


def check_names(desired: Desired) -> None:
    """Refuse, before anything changes, a fleet whose hostnames another fleet
    already routes on the same proxy port."""
    provisional = [
        table.Route(agent=a.name, service=svc, container_port=port, target="http://127.0.0.1:1", tls=desired.proxy.tls)
        for a in desired.agents.values()
        for svc, port in a.ports.items()
    ]
    if provisional:
        table.check_collisions(table.read_table(), desired.fleet, table.proxy_listen(desired.proxy), provisional)


def check_proxy_port(desired: Desired) -> None:
    """Refuse, before anything changes, a fleet with ports whose proxy port is
    held by anything but this FLEET_HOME's own proxy (another user's proxy,
    another FLEET_HOME, any program): its URLs would reach that instead. One
    proxy per FLEET_HOME; its port must be free."""
    if not any(a.ports for a in desired.agents.values()):
        return
    import socket

    from reconciler.routing import daemon

    for listen in table.proxy_listen(desired.proxy):
        if daemon.running_pid() is not None:
            state = daemon.read_state() or {}
            if any(x.get("port") == listen.port and x.get("bind") == listen.bind for x in state.get("listening", [])):
                continue  # our own proxy has it
        sock = socket.socket(socket.AF_INET6 if ":" in listen.bind else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy binds: TIME_WAIT is no holder
            sock.bind((listen.bind, listen.port))
        except OSError:
            from reconciler.routing.proxy import open_listen_socket  # its error names the port and, when known, its holder

            try:
                open_listen_socket(listen).close()
            except FleetError as exc:
                raise FleetError(f"fleet {desired.fleet}: routing proxy: {exc}") from None
        finally:
            sock.close()


def apply_routes(fleet: str, proxy: ProxySettings, routes: Sequence[Route]) -> None:
    """Write `routes` as the fleet's entry (proxy port from `proxy`), make sure
    the proxy runs for it and wait until it serves them."""
    from reconciler.routing import daemon

    listen = table.proxy_listen(proxy)
    written = table.set_fleet_routes(fleet, listen, routes)
    daemon.ensure_running(need=listen)  # this fleet's port; others' are not ours to fail on
    daemon.wait_loaded(written.revision)  # apply returns once the proxy serves these routes
    engines = {r.engine for r in routes if r.engine}
    if engines:  # ...and, for agents on remote engines, once its links to them are up (bounded)
        daemon.wait_links(engines)


def remove_routes(fleet: str) -> str | None:
    """Drop the fleet's routes. When that empties the table (no fleet routes
    anything, no `fleet proxy start --port` listen address) the proxy has nothing
    left to serve and is stopped; `apply` starts it again when a fleet has ports."""
    written = table.remove_fleet(fleet)
    from reconciler.routing import daemon

    # under the proxy's start lock: an apply that writes routes meanwhile either
    # shows in the table read here, or starts the proxy again once it is stopped
    with daemon.start_lock():
        left = table.read_table()
        pid = None if left.fleets or left.listen else daemon.stop()
    if pid is None:
        daemon.wait_loaded(written.revision)  # its URLs are 404 once this returns
    return f"stopped the fleet proxy (pid {pid}): no fleet has routes any more" if pid else None
