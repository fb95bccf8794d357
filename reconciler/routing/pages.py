"""What the proxy answers itself: the index of routes at `localhost` (HTML, or
JSON for `Accept: application/json`), the 404 listing the known routes, and the
502/504 bodies naming the agent whose target failed."""

from __future__ import annotations

import html
import json

from reconciler.routing.index import RouteIndex, Target

def route_listing(index: RouteIndex, port: int, scheme: str) -> list[dict]:
    out = []
    names: dict[tuple[str, str, str], list[str]] = {}
    for name, t in index.by_port.get(port, {}).items():
        names.setdefault((t.fleet, t.route.agent, t.route.service), []).append(name)
    for t in index.routes(port):
        hostnames = sorted(names[(t.fleet, t.route.agent, t.route.service)], key=lambda n: (-n.count("."), n))
        out.append(
            {
                "fleet": t.fleet,
                "agent": t.route.agent,
                "service": t.route.service,
                "url": f"{scheme}://{t.route.hostname()}:{port}/",
                "hostnames": hostnames,
                "container_port": t.route.container_port,
                "target": t.route.target,
            }
        )
    return out


def gateway_error(t: Target, what: str) -> str:
    """The body of a 502 or 504: which agent (fleet, service) failed, at which target, and how."""
    return f"fleet proxy: agent {t.route.agent} (fleet {t.fleet}, service {t.route.service}) {what}\n"


def wants_json(accept: bytes) -> bool:
    accept = accept.lower()
    return b"application/json" in accept and b"text/html" not in accept


def index_page(index: RouteIndex, port: int, scheme: str, accept: bytes) -> tuple[str, str]:
    """(content type, body) of the index of routes on `port`."""
    listing = route_listing(index, port, scheme)
    if wants_json(accept):
        return "application/json", json.dumps({"version": 1, "port": port, "routes": listing}, indent=1) + "\n"
    return "text/html; charset=utf-8", html_page("fleet routes", "", listing)


def not_found_page(index: RouteIndex, port: int, scheme: str, hostname: str, accept: bytes) -> tuple[str, str]:
    """(content type, body) of the 404 for `hostname`: what is wrong, and every known route."""
    listing = route_listing(index, port, scheme)
    labels = hostname[: -len(".localhost")].split(".")
    note = f"no route for {hostname} on port {port}"
    if len(labels) == 1:
        services = [r["service"] for r in listing if r["agent"] == labels[0]]
        if len(services) > 1:
            note += f": agent {labels[0]} has several ports, use " + " or ".join(
                f"{s}.{labels[0]}.localhost" for s in services
            )
    elif len(labels) == 2:
        services = [r["service"] for r in listing if r["agent"] == labels[1]]
        if services:
            note += f": agent {labels[1]} serves " + ", ".join(services)
    if wants_json(accept):
        return "application/json", json.dumps({"version": 1, "error": note, "port": port, "routes": listing}, indent=1) + "\n"
    if b"text/html" in accept:
        return "text/html; charset=utf-8", html_page("no such route", note, listing)
    lines = [f"fleet proxy: {note}", "known routes:" if listing else "no routes on this port"]
    lines += [f"  {r['url']}  (fleet {r['fleet']}, agent {r['agent']})" for r in listing]
    return "text/plain; charset=utf-8", "\n".join(lines) + "\n"


def html_page(title: str, note: str, listing: list[dict]) -> str:
    rows = "".join(
        "<tr><td>{fleet}</td><td>{agent}</td><td>{service}</td><td><a href=\"{url}\">{url}</a></td>"
        "<td>{aliases}</td><td><code>{target}</code></td></tr>".format(
            fleet=html.escape(r["fleet"]),
            agent=html.escape(r["agent"]),
            service=html.escape(r["service"]),
            url=html.escape(r["url"]),
            aliases=html.escape(", ".join(r["hostnames"][1:])),
            target=html.escape(r["target"]),
        )
        for r in listing
    )
    table = (
        "<table><tr><th>fleet</th><th>agent</th><th>service</th><th>URL</th><th>also</th><th>target</th></tr>"
        f"{rows}</table>"
        if listing
        else "<p>No routes on this port yet: declare <code>ports:</code> on an agent and run <code>fleet apply</code>.</p>"
    )
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>"
        + html.escape(title)
        + "</title><style>body{font-family:system-ui,sans-serif;margin:2em}td,th{padding:.3em .8em;text-align:left}"
        "tr:nth-child(even){background:#f3f3f3}</style></head><body><h1>"
        + html.escape(title)
        + "</h1>"
        + (f"<p>{html.escape(note)}</p>" if note else "")
        + table
        + "</body></html>\n"
    )
