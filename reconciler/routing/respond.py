"""The response side of a client connection: relayed response heads, the
switch to a tunnel after 101 (WebSocket and other upgrades), the end of an
exchange (the upstream connection kept at hand or closed, the next request
read), and the answers the proxy gives itself (`net.responses`).
"""

from __future__ import annotations

import asyncio

from reconciler.net.http1 import Head
from reconciler.net.responses import TEXT_PLAIN, local_response
from reconciler.routing.conn import ClientBase
from reconciler.routing.exchange import HEAD, TUNNEL
from reconciler.routing.rewrite import CLOSE_TAIL, END_TAIL, KEEP_ALIVE_TAIL, response_head, switching_head
from reconciler.routing.upstream import UpstreamConn

_LOCAL_HEADERS = (("Cache-Control", "no-store"), ("Server", "fleet-proxy"))


class Responding(ClientBase):
    def response_head(self, head: Head, interim: bool = False) -> bytes:
        if interim:
            return response_head(head, END_TAIL)
        ex = self.exchange
        if ex is None or ex.close_after or self.eof:
            return response_head(head, CLOSE_TAIL)
        if self.client_version == b"1.0":
            return response_head(head, KEEP_ALIVE_TAIL)
        return response_head(head, END_TAIL)

    def start_tunnel(self, up: UpstreamConn, head: Head, rest: bytes) -> None:
        self.write(switching_head(head) + rest)
        self.state = TUNNEL
        if self.exchange is not None:
            self.exchange.response_started = True
        self.resume("pipeline")
        if self.buf and up.transport is not None:
            up.transport.write(bytes(self.buf))
            self.buf.clear()
        if self.eof and up.transport is not None:
            # the client had already finished sending: pass its half-close on
            if up.transport.can_write_eof():
                up.transport.write_eof()
            else:
                up.close()

    def response_done(self, up: UpstreamConn, reusable: bool, force_close: bool = False) -> None:
        ex = self.exchange
        self.exchange = None
        if up is self.upstream:
            self.upstream = None
            if self.paused_for:
                self.resume("upstream-full")
            if reusable and ex is not None and ex.request_done and not force_close:
                # keep it at hand: the next request on this connection most
                # likely goes to the same target
                if self.idle_up is not None:
                    self.server.pool.release(self.idle_up)
                self.idle_up = up
                if up.paused_for:
                    up.resume("client-full")
            else:
                up.close()
        if ex is None or force_close or ex.close_after or not ex.request_done or self.eof:
            self.close()
            return
        self._next()

    def _next(self) -> None:
        self.state = HEAD
        if self.paused_for:
            self.resume("pipeline")
        if self.buf:
            # a pipelined request: parse it on the next loop turn (no recursion)
            self._arm(self.cfg.header_timeout)
            asyncio.get_running_loop().call_soon(self._pipelined)
        else:
            self._arm(self.cfg.keepalive_timeout)

    def _pipelined(self) -> None:
        if self.state == HEAD and self.buf:
            self._try_head()

    def local_response(
        self, status: int, body: str | bytes, close: bool = False, content_type: str = TEXT_PLAIN
    ) -> None:
        """Answer the client from the proxy itself; then read its next request,
        unless the connection is to close."""
        close = close or not self.keep_alive or self.eof
        self.write(local_response(status, body, close=close, content_type=content_type, headers=_LOCAL_HEADERS))
        self.exchange = None
        if close:
            self.close()
        else:
            self._next()
