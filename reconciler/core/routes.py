"""Routes, decided: which hostname reaches which agent port, and when the
route table must change.

- `Route`: one agent port reachable through the routing proxy (the entries of
  the route table, routing/table.py, which keeps the file IO).
- `routes_for(desired, observed)`: the routes the running agents need.
- `plan_routes`: reconcile's part: one route action per apply, only when the
  table would change, with the cause naming the agents whose routes move.
- `routes_to_write`: what the route action writes when it runs, computed from
  the execution state (the plan-time observation with the actions' outcomes
  applied, core/outcome.py): nothing is observed again mid-plan.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from reconciler.core.builder import Builder
from reconciler.core.model import MODAL_ROUTER_PORT, Desired, DesiredAgent, Observed, ProxySettings, Route
from reconciler.core.plan import AgentDestroy, RouteUpdate


def routes_for(desired: Desired, observed: Observed) -> list[Route]:
    """The routes of a fleet, from what is desired and what runs.

    An agent gets a route per declared port when it runs: a private agent's
    published port comes from the agent itself (published on 127.0.0.1, which
    also works where container addresses are not reachable), an agent on a
    shared Docker host is reached at the holder's address on the bridge (the
    holder publishes nothing, so joins never replace it), an agent on a Modal
    host through the host's one tunnel to its port router, told the agent's port
    (a sandbox made before the router: at its per-port tunnel URLs). An agent on
    a remote engine (`engine:`) is reached at its bridge address there (its
    holder's, on a shared host), with `Route.engine` set: the proxy daemon dials
    it through its SSH link to that engine; nothing is published there. Agents
    not running (or whose host is not running) get none.
    """
    hosts = {h.name: h for h in observed.hosts}
    tls = desired.proxy.tls
    out: list[Route] = []
    for oa in sorted(observed.agents, key=lambda a: a.name):
        da = desired.agents.get(oa.name)
        if da is None or not da.ports or oa.state != "running":
            continue
        host = hosts.get(oa.host) if oa.host else None
        if oa.host and (host is None or host.state != "running"):
            continue
        engine = oa.engine
        for service, cport in sorted(da.ports.items()):
            target: str | None = None
            inner: int | None = None
            if engine is not None:  # a remote engine: its bridge address, through the daemon's link to it
                address = host.address if host is not None else oa.address
                if address:
                    out.append(Route(agent=oa.name, service=service, container_port=cport,
                                     target=f"http://{_url_host(address)}:{cport}", tls=tls, engine=engine))
                continue
            if host is not None and host.provider == "modal" and MODAL_ROUTER_PORT in host.urls:
                target, inner = host.urls[MODAL_ROUTER_PORT], cport  # one tunnel to the host's port router
            elif host is not None and cport in host.urls:
                target = host.urls[cport]
            elif host is not None and host.provider == "docker" and host.address:
                target = f"http://{host.address}:{cport}"  # the holder publishes nothing
            elif host is not None and cport in host.ports:  # a holder made before it stopped publishing
                target = f"http://127.0.0.1:{host.ports[cport]}"
            elif cport in oa.ports:
                target = f"http://127.0.0.1:{oa.ports[cport]}"
            if target is None:
                continue
            out.append(Route(agent=oa.name, service=service, container_port=cport, target=target, tls=tls,
                             inner_port=inner))
    return out


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def routes_to_write(desired: Desired, now: Observed) -> list[Route] | None:
    """The fleet's entry in the route table once a plan's actions are done
    (`now`: the execution state's view of the world). None: drop the entry (the
    fleet has no ports and nothing routed). Routes of agents fleet.yaml names
    that have none now (not running right now, or not observed) are kept as
    they were: a route is removed only when its agent is gone."""
    routes = routes_for(desired, now)
    if not routes and not any(a.ports for a in desired.agents.values()):
        return None
    routed = {r.agent for r in routes}
    for old in now.routes or ():
        if old.agent in desired.agents and old.agent not in routed:
            routes.append(old)
    return sorted(routes, key=lambda r: (r.agent, r.service))


def service_urls(agent: str, services: Iterable[str], proxy: ProxySettings) -> dict[str, str]:
    """service -> the agent's public URL through the proxy, e.g.
    `https://web.dark-mode.localhost:8080` (http when proxy TLS is off).
    These are the values of FLEET_URL_<SERVICE> and what status shows."""
    scheme = "https" if proxy.tls else "http"
    return {s: f"{scheme}://{s}.{agent}.localhost:{proxy.port}" for s in sorted(services)}


def agent_urls(agent: DesiredAgent, proxy: ProxySettings) -> dict[str, str]:
    return service_urls(agent.name, agent.ports, proxy)


def url_env(agent: DesiredAgent, proxy: ProxySettings) -> dict[str, str]:
    """FLEET_URL_<SERVICE> variables for an agent (upper case, `-` to `_`)."""
    from reconciler.core.labels import env_name

    return {env_name(s): u for s, u in agent_urls(agent, proxy).items()}


# -- the route action (reconcile's part) ---------------------------------------------

ROUTE_OPS = {"create": "added", "join": "added", "replace": "replaced", "start": "started", "restart": "restarted",
             "destroy": "removed"}


def plan_routes(b: Builder) -> None:
    """One route action per apply, only when the route table would change: an
    agent with ports is created, joined, replaced or (re)started (its target
    moves), an agent with routes is destroyed, or the fleet's entry differs from
    what the running agents need (lost, edited, proxy not running). Agents
    without ports coming and going leave the table alone. The cause names the
    agents whose routes change."""
    wants_ports = any(a.ports for a in b.desired.agents.values())
    if not wants_ports and b.observed.routes is None:
        return
    current = b.observed.routes or ()
    routed = {r.agent for r in current}
    moving: dict[str, str] = {}
    deps: list[str] = []
    for act in b.actions:
        if act.kind != "agent" or act.op not in ROUTE_OPS:
            continue
        d = b.desired.agents.get(act.name)
        has_ports = bool(d and d.ports and d.enabled)
        if isinstance(act, AgentDestroy):
            still_wanted = has_ports and any(
                o.name == act.name and o.id != act.observed_agent.id for o in b.observed.agents
            )
            if act.name not in routed or still_wanted and act.name in moving:
                continue
            what = "replaced" if still_wanted else "removed"
        elif has_ports or act.name in routed:
            what = "added" if act.op in ("create", "join") and act.name not in routed else ROUTE_OPS[act.op]
            if not has_ports:
                what = "removed"
        else:
            continue
        moving.setdefault(act.name, what)
        deps.append(act.id)
    # The routes are computed from the world as the plan leaves it, so the route
    # action waits for every action that changes which containers exist (a
    # duplicate going, a holder replaced), also those that move no route by name.
    deps += [a.id for a in b.actions if a.kind == "host" or (a.kind == "agent" and a.op in ROUTE_OPS)]
    deps = list(dict.fromkeys(deps))
    derived = tuple(routes_for(b.desired, b.observed))
    if moving:
        shown = [f"{n} ({w})" for n, w in sorted(moving.items())]
        cause = "routes of " + ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    elif b.observed.routes is None:
        cause = "no routes for this fleet"
    elif wants_ports and not b.observed.proxy_running:
        cause = "routing proxy not running"
    elif sorted(current, key=_key) != sorted(derived, key=_key) and (
        _missing_or_moved(current, derived) or _of_gone_agents(current, b.desired, b.observed)
    ):
        cause = "route table out of date"
    else:
        b.unchanged.append("route:routes")
        return
    b.add(RouteUpdate(cause=cause, depends_on=tuple(deps)))


def _key(r: Route) -> tuple[str, str]:
    return (r.agent, r.service)


def _missing_or_moved(current: tuple[Route, ...], derived: tuple[Route, ...]) -> bool:
    """Routes of running agents that are absent or point elsewhere. Extra routes
    of agents not running right now are kept on purpose (removed only when gone)."""
    have = {_key(r): r for r in current}
    return any(have.get(_key(r)) != r for r in derived)


def _of_gone_agents(current: tuple[Route, ...], desired: Desired, observed: Observed) -> bool:
    """Routes of agents that are gone: neither in fleet.yaml nor running anywhere
    (a route action skipped after a failure left them behind; they answer 502)."""
    present = set(desired.agents) | {a.name for a in observed.agents}
    return any(r.agent not in present for r in current)
