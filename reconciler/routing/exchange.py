"""One request/response on a client connection, and the connection states."""

from __future__ import annotations

from reconciler.net.http1 import NONE, Body
from reconciler.routing.index import Target

# A connection's (and an upstream connection's) state: reading a head, relaying
# a request body, waiting for the response, tunnelling (after 101), closed.
HEAD, BODY, WAIT, TUNNEL, CLOSED = range(5)


class Exchange:
    """One request/response on a client connection."""

    __slots__ = (
        "head_bytes",
        "method",
        "target",
        "hostname",
        "body_kind",
        "body",
        "request_done",
        "response_started",
        "close_after",
        "upgrade",
        "pending",
        "pending_size",
        "retried",
    )

    def __init__(self, head_bytes: bytes, method: bytes, target: Target, hostname: str, body_kind: int, length: int):
        self.head_bytes = head_bytes  # the request head as it goes to the target
        self.method = method
        self.target = target
        self.hostname = hostname
        self.body_kind = body_kind
        self.body = Body(body_kind, length) if body_kind != NONE else None  # the request body's end
        self.request_done = body_kind == NONE
        self.response_started = False
        self.close_after = False
        self.upgrade = False
        self.pending: list[bytes] = []  # body bytes waiting for the upstream connection
        self.pending_size = 0
        self.retried = False
