"""The proxy's connections: parse a request head, route it, relay both ways.

`ClientConn` is one client connection (plain or TLS), put together from:
- `conn.ClientBase`: the state machine (asyncio callbacks, half-close, deadlines);
- `requests.RequestSide`: request heads (parsed, routed, rewritten) and bodies;
- `connect.Connecting`: connecting to the target; 502 and 504;
- `respond.Responding`: response heads, upgrades (tunnels), local answers;
- `net.guard.ClientGuard`: the per-source slot and the request-body deadline.

`upstream.UpstreamConn` is one connection to a target, kept alive in
`upstream.UpstreamPool` (and kept at hand by the client connection that used
it last). Bodies are relayed as they arrive; only heads are parsed (`http1`).
Backpressure pauses reading on one side while the other side's write buffer is
full (`net.pipes.Pausable`), so memory stays bounded. This is the hot path: it
is written for speed (C-level byte scans, no per-request timers: one deadline
per client connection, enforced by the server's sweeper).
"""

from __future__ import annotations

from reconciler.net.guard import ClientGuard
from reconciler.routing.connect import Connecting
from reconciler.routing.requests import RequestSide
from reconciler.routing.respond import Responding
from reconciler.routing.upstream import RelayServer, UpstreamConn, UpstreamPool

__all__ = ["ClientConn", "RelayServer", "UpstreamConn", "UpstreamPool"]


class ClientConn(ClientGuard, RequestSide, Connecting, Responding):
    """One client connection: parses request heads, routes, relays."""
