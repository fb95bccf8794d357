"""The route table: which hostname on which proxy port reaches which agent port.

It lives in `$FLEET_HOME/routes.json`, shared by every fleet on this machine and
read by the one routing proxy, which reloads it when it changes. `fleet apply`
derives a fleet's routes with the pure `core.routes.routes_to_write` and
writes them with `set_fleet_routes` (atomically, under an flock); there is no
other bookkeeping path. A hostname on a proxy port belongs to one fleet: a
second fleet claiming it is refused with a message naming the first.

Format (version 1; `revision` counts writes, the proxy reports the one it serves):

    {"version": 1, "revision": 7,
     "listen": [{"port": 9000, "bind": "127.0.0.1"}],          # `fleet proxy start --port`
     "fleets": {"my-app": {"listen": [{"port": 8080, "bind": "127.0.0.1"}],
                           "routes": [{"agent": "dark-mode", "service": "web",
                                       "container_port": 3000,
                                       "target": "http://127.0.0.1:49153", "tls": true}]}}}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.core.errors import FleetError
from reconciler.state.home import ensure_dir, fleet_home, write_atomic
from reconciler.core.model import ProxySettings
# Route and the pure derivation are core/routes.py's; re-exported for their users here
from reconciler.core.routes import Route, agent_urls, routes_for, service_urls, url_env  # noqa: F401

VERSION = 1
DEFAULT_PORT = 8080
DEFAULT_BIND = "127.0.0.1"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Listen(_Frozen):
    """One address the proxy listens on."""

    port: int = Field(ge=1, le=65535)
    bind: str = DEFAULT_BIND

    @property
    def key(self) -> str:
        return f"{self.bind}:{self.port}"


class FleetRoutes(_Frozen):
    listen: tuple[Listen, ...] = ()
    routes: tuple[Route, ...] = ()


class RouteTable(_Frozen):
    version: int = VERSION
    # bumped by every write; the proxy reports the revision it serves, so a
    # writer can wait until its change is live (`daemon.wait_loaded`)
    revision: int = 0
    listen: tuple[Listen, ...] = ()  # extra ports from `fleet proxy start --port N`
    fleets: dict[str, FleetRoutes] = Field(default_factory=dict)

    def listen_addresses(self, default: Listen | None = None) -> list[Listen]:
        """Every address the proxy should listen on (deduplicated, sorted).
        With nothing asked for at all, `default` (when given)."""
        seen: dict[tuple[str, int], Listen] = {}
        for lst in [self.listen, *(f.listen for f in self.fleets.values())]:
            for item in lst:
                seen.setdefault((item.bind, item.port), item)
        if not seen and default is not None:
            return [default]
        return sorted(seen.values(), key=lambda x: (x.port, x.bind))

    def hostnames(self, port: int) -> dict[str, tuple[str, Route]]:
        """hostname -> (fleet, route) served on proxy `port`.

        Fleets that listen on `port` come first; an extra (`--port`) listen port
        serves every fleet's routes, the first fleet by name winning a name
        claimed twice."""
        out: dict[str, tuple[str, Route]] = {}
        extra = any(item.port == port for item in self.listen)
        for fleet in sorted(self.fleets):
            entry = self.fleets[fleet]
            if not (extra or any(item.port == port for item in entry.listen)):
                continue
            for name, route in _names(entry.routes).items():
                out.setdefault(name, (fleet, route))
        return out


def _names(routes: Iterable[Route]) -> dict[str, Route]:
    """hostname -> route for one fleet: `<service>.<agent>.localhost`, plus
    `<agent>.localhost` for an agent with exactly one port."""
    routes = list(routes)
    out: dict[str, Route] = {}
    per_agent: dict[str, list[Route]] = {}
    for r in routes:
        out[r.hostname()] = r
        per_agent.setdefault(r.agent, []).append(r)
    for agent, rs in per_agent.items():
        if len({r.service for r in rs}) == 1:
            out[f"{agent}.localhost"] = rs[0]
    return out


# -- files -------------------------------------------------------------------


def table_path() -> Path:
    return fleet_home() / "routes.json"


def lock_path() -> Path:
    return fleet_home() / "routes.lock"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """Hold the route table's write lock (an flock on `$FLEET_HOME/routes.lock`)."""
    ensure_dir(fleet_home())
    with open(lock_path(), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def parse_table(raw: bytes | str, source: str = "routes.json") -> RouteTable:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FleetError(f"{source} is not valid JSON ({exc}); delete it and run `fleet apply` again") from exc
    if not isinstance(data, dict):
        raise FleetError(f"{source} is not a route table; delete it and run `fleet apply` again")
    version = data.get("version")
    if version != VERSION:
        raise FleetError(f"{source} has version {version!r}; this fleet understands version {VERSION}")
    try:
        return RouteTable.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FleetError(f"{source}: {where}: {first['msg']}; delete it and run `fleet apply` again") from exc


def read_table() -> RouteTable:
    """The current route table (empty when there is none yet)."""
    path = table_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RouteTable()
    except OSError as exc:
        raise FleetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_table(raw, str(path))


def write_table(table: RouteTable) -> RouteTable:
    """Replace routes.json atomically (temp file, fsync, rename), one revision
    after `table`'s; returns what was written. Call under `locked()`."""
    path = table_path()
    ensure_dir(path.parent)
    table = table.model_copy(update={"revision": table.revision + 1})
    data = table.model_dump(mode="json", exclude_none=True)  # inner_port only where set
    blob = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
    try:
        write_atomic(path, blob, mode=0o644)
    except OSError as exc:
        raise FleetError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return table


# -- changes -----------------------------------------------------------------


def _as_listen(items: Sequence[Listen | Mapping[str, Any] | int]) -> tuple[Listen, ...]:
    out: list[Listen] = []
    for item in items:
        if isinstance(item, Listen):
            out.append(item)
        elif isinstance(item, int):
            out.append(Listen(port=item))
        else:
            out.append(Listen.model_validate(dict(item)))
    return tuple(dict.fromkeys(out))


def _as_routes(items: Sequence[Route | Mapping[str, Any]]) -> tuple[Route, ...]:
    return tuple(r if isinstance(r, Route) else Route.model_validate(dict(r)) for r in items)


def check_collisions(table: RouteTable, fleet: str, listen: Sequence[Listen], routes: Sequence[Route]) -> None:
    """Refuse a fleet entry that claims a hostname (or a port on another
    address) that another fleet already holds on the same proxy port."""
    mine = _names(routes)
    for other, entry in sorted(table.fleets.items()):
        if other == fleet:
            continue
        for a in listen:
            for b in entry.listen:
                if a.port == b.port and a.bind != b.bind:
                    raise FleetError(
                        f"proxy port {a.port} is bound to {b.bind} by fleet {other}; "
                        f"fleet {fleet} asks for {a.bind} (use the same proxy.bind or another proxy.port)"
                    )
        shared = {a.port for a in listen} & {b.port for b in entry.listen}
        if not shared:
            continue
        theirs = _names(entry.routes)
        clash = sorted(set(mine) & set(theirs), key=lambda n: (-n.count("."), n))
        if clash:
            port = min(shared)
            name = clash[0]
            more = f" (and {len(clash) - 1} more)" if len(clash) > 1 else ""
            raise FleetError(
                f"{name}:{port} is already routed by fleet {other} (agent {theirs[name].agent}){more}; "
                f"rename the agent or give fleet {fleet} another proxy.port"
            )


def set_fleet_routes(
    fleet: str,
    listen: Sequence[Listen | Mapping[str, Any] | int],
    routes: Sequence[Route | Mapping[str, Any]],
    keep_agents: Iterable[str] = (),
) -> RouteTable:
    """Replace `fleet`'s entry in the table; returns the new table.

    `keep_agents`: agents whose previous routes stay when `routes` has none for
    them (an agent that exists but is not running right now, or whose provider
    could not be observed): a route is removed only when its agent is gone.
    Raises FleetError, changing nothing, when a hostname collides with another fleet.
    """
    new_listen = _as_listen(listen)
    new_routes = list(_as_routes(routes))
    with locked():
        table = read_table()
        keep = set(keep_agents) - {r.agent for r in new_routes}
        if keep and fleet in table.fleets:
            new_routes += [r for r in table.fleets[fleet].routes if r.agent in keep]
        new_routes.sort(key=lambda r: (r.agent, r.service))
        check_collisions(table, fleet, new_listen, new_routes)
        entry = FleetRoutes(listen=new_listen, routes=tuple(new_routes))
        if table.fleets.get(fleet) == entry:
            return table  # unchanged: no write, the proxy has nothing to reload
        fleets = dict(table.fleets)
        fleets[fleet] = entry
        table = table.model_copy(update={"fleets": fleets})
        return write_table(table)


def remove_fleet(fleet: str) -> RouteTable:
    """Drop every route of `fleet` (after `fleet destroy`)."""
    with locked():
        table = read_table()
        if fleet not in table.fleets:
            return table
        fleets = {k: v for k, v in table.fleets.items() if k != fleet}
        table = table.model_copy(update={"fleets": fleets})
        return write_table(table)


def add_listen(port: int, bind: str = DEFAULT_BIND) -> RouteTable:
    """Add an extra listen address (`fleet proxy start --port N`)."""
    item = Listen(port=port, bind=bind)
    with locked():
        table = read_table()
        for other, entry in sorted(table.fleets.items()):
            for b in entry.listen:
                if b.port == port and b.bind != bind:
                    raise FleetError(f"proxy port {port} is bound to {b.bind} by fleet {other}; not {bind}")
        if item in table.listen:
            return table
        table = table.model_copy(update={"listen": (*table.listen, item)})
        return write_table(table)


def remove_listen(port: int) -> RouteTable:
    with locked():
        table = read_table()
        kept = tuple(x for x in table.listen if x.port != port)
        if kept == table.listen:
            return table
        table = table.model_copy(update={"listen": kept})
        return write_table(table)


# -- derivation (pure) ----------------------------------------------------------


def proxy_listen(settings: ProxySettings) -> list[Listen]:
    return [Listen(port=settings.port, bind=settings.bind)]
