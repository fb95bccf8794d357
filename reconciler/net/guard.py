"""Per-connection defences of the routing proxy's client connections.

`ClientGuard` is mixed into `relay.ClientConn`; it holds the connection's
`limits.Slot` (its place in its source's counts: of connections that have not
sent a complete request head, left at the first head; of open connections,
left on close), and
the request-body deadline: while a request body is coming in and no response
has started, at least `body_min_bytes` must arrive in every `body_timeout`
window (windows while the proxy itself holds reading back do not count).
A client that sends a head with a large Content-Length (or chunked) and then
stalls or trickles a few bytes now and then (slowhttptest -B) is answered 408
and closed; a slow but steady upload goes on.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from reconciler.net.limits import Slot

log = logging.getLogger("fleet.proxy")


class _Guarded(Protocol):
    """The connection a ClientGuard is mixed into (`routing.relay.ClientConn`)."""

    cfg: Any
    exchange: Any
    peer: str
    paused_for: set[str]
    body_seen: int

    def arm_body(self) -> None: ...
    def _drop_upstream(self, ex: Any) -> None: ...
    def local_response(self, status: int, body: str, close: bool = False) -> None: ...


class ClientGuard:
    slot: "Slot | None" = None
    body_seen = 0
    # provided by ClientConn
    cfg: Any
    deadline: float | None
    exchange: Any
    peer: str
    paused_for: set[str]

    def trusted(self) -> None:
        """A complete request head arrived: this connection no longer counts as pending."""
        slot = self.slot
        if slot is not None and slot.pending:
            slot.trusted()

    def release_slot(self) -> None:
        """The connection closed."""
        slot = self.slot
        if slot is not None:
            self.slot = None
            slot.release()

    def arm_body(self) -> None:
        self.body_seen = 0
        self.deadline = time.monotonic() + self.cfg.body_timeout

    def body_expired(self: "_Guarded") -> None:
        ex = self.exchange
        if ex is None or ex.request_done or ex.response_started:
            return  # nothing times out once the response has started
        if self.paused_for or self.body_seen >= self.cfg.body_min_bytes:
            self.arm_body()  # the proxy held reading back, or the body is moving
            return
        log.info(
            "closing %s: request body for %s stalled (under %d bytes in %gs)",
            self.peer, ex.hostname, self.cfg.body_min_bytes, self.cfg.body_timeout,
            extra={"source": self.peer},
        )
        ex.close_after = True
        self._drop_upstream(ex)
        self.local_response(408, "fleet proxy: request body not received in time\n", close=True)



def describe_oserror(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the target ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
