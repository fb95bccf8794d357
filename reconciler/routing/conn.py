"""A client connection's state machine: its asyncio callbacks, half-close
handling, deadlines and writing. `relay.ClientConn` adds the request side
(`requests`), connecting to targets (`connect`) and the response side
(`respond`) to this base.

Deadlines on a client connection, one at a time, checked by the server's
sweeper (no timer per request): the request head (`header_timeout`), the idle
keep-alive wait (`keepalive_timeout`), the request body (`net.guard`), and the
wait for the target's response head once the request has been handed to it
(`response_timeout`: 504). Once the first byte of a response arrives nothing
times out: streams (SSE, chunked, WebSocket) last as long as both ends want.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from reconciler.net.http1 import Head
from reconciler.net.pipes import Pausable, tune_read_size
from reconciler.routing.exchange import BODY, CLOSED, HEAD, TUNNEL, WAIT, Exchange
from reconciler.routing.rewrite import forwarded_prefix
from reconciler.routing.upstream import RelayServer, UpstreamConn

log = logging.getLogger("fleet.proxy")

# Linux: the first byte of TCP_INFO is the socket's state; TCP_CLOSE once a reset arrived.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_CLOSE = b"\x07"


class ClientBase(Pausable):
    """One client connection's state; the methods other parts provide are
    declared at the end."""

    body_seen = 0  # request body bytes in the current window (net.guard)

    def __init__(self, server: RelayServer, port: int, scheme: str):
        super().__init__()
        self.server = server
        self.cfg = server.config
        self.port = port
        self.scheme = scheme
        self.scheme_b = scheme.encode()
        self.transport: asyncio.Transport | None = None
        self.peer = "127.0.0.1"
        self.peer_b = b"127.0.0.1"
        self.forwarded = forwarded_prefix(self.peer_b, self.scheme_b)
        self.buf = bytearray()
        self.state = HEAD
        self.exchange: Exchange | None = None
        self.upstream: UpstreamConn | None = None
        self.idle_up: UpstreamConn | None = None  # the last target's connection, kept for the next request
        self.connecting: asyncio.Task | None = None
        self.deadline: float | None = None  # checked by the server's sweeper
        self.head_started = False
        self.eof = False
        self.keep_alive = True
        self.client_version = b"1.1"

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tune_read_size(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.peer_b = self.peer.encode()
            self.forwarded = forwarded_prefix(self.peer_b, self.scheme_b)
        transport.set_write_buffer_limits(high=self.cfg.high_water)
        self.server.clients.add(self)
        self._arm(self.cfg.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.release_slot()
        self.server.clients.discard(self)
        self.server.probing.discard(self)
        self._disarm()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.abort() if self.exchange is not None and not self.exchange.request_done else up.close()
        self.exchange = None
        if self.idle_up is not None:
            idle, self.idle_up = self.idle_up, None
            self.server.pool.release(idle)

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause("client-full")

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume("client-full")

    def eof_received(self) -> bool:
        """The client will send no more. Whether it still reads cannot be told
        from a FIN alone: a client that went away (close) and one that only shut
        down its write side after a whole request (shutdown(SHUT_WR), as `nc -N`
        does) look the same. The rule:

        - no request in flight, or one not yet whole: the connection is closed
          (and an unfinished request's upstream connection dropped);
        - a response already under way: it is finished, then the connection
          closed (a client that has gone makes the writes fail, which closes it);
        - a whole HTTP/1.1 request waiting for the target's answer: probe with
          an interim `100 Continue` (RFC 9110 section 15.2: a client must parse
          unexpected 1xx responses). A client that has gone answers the probe
          with a reset, which the sweeper sees (`check_gone`): the upstream
          connection is closed, never pooled, and the request dropped. A client
          that only half-closed reads the 100, then the answer;
        - HTTP/1.0 requests (which must not get a 1xx) and upgrade requests
          waiting for their 101 are answered as half-closes; the response
          timeout bounds how long a client that went away holds the target.
        """
        self.eof = True
        if self.state == TUNNEL or self.scheme == "https":
            return False
        ex = self.exchange
        if ex is not None and ex.request_done:
            if not ex.response_started and self.client_version == b"1.1" and not ex.upgrade:
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.server.probing.add(self)
            return True  # answer the request in flight, then close
        return False

    def check_gone(self) -> None:
        """Called by the sweeper for a client probed after its EOF: when the probe
        was reset (the client closed, not just half-closed), let everything go."""
        ex = self.exchange
        t = self.transport
        if self.state == CLOSED or ex is None or ex.response_started or t is None or t.is_closing():
            self.server.probing.discard(self)
            return
        sock = t.get_extra_info("socket")
        if sock is None:
            return
        gone = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
        if not gone and _TCP_INFO is not None:
            gone = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[:1] == _TCP_CLOSE
        if gone:
            self.server.probing.discard(self)
            log.info("client %s went away while %s was answering; dropping the request", self.peer, ex.hostname)
            t.abort()  # connection_lost closes the upstream connection (not pooled)

    # deadlines (a sweeper checks them: no timer per request)
    def _arm(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def _disarm(self) -> None:
        self.deadline = None

    def arm_response(self) -> None:
        """The request is wholly with the target: its response head is due within the response timeout."""
        self.deadline = time.monotonic() + self.cfg.response_timeout

    def expired(self) -> None:
        self.deadline = None
        st = self.state
        if st == HEAD:
            if self.buf.strip(b"\r\n"):
                self.local_response(408, "fleet proxy: request head not received in time\n", close=True)
            else:
                self.close()
        elif st == BODY:
            self.body_expired()
        elif st == WAIT:
            ex = self.exchange
            if ex is not None and ex.request_done and not ex.response_started and self.upstream is not None:
                self._gateway_timeout(ex)

    # writing
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def close(self) -> None:
        self.state = CLOSED
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    # provided by the other parts of `relay.ClientConn` (net.guard, requests, connect, respond)
    def release_slot(self) -> None:
        raise NotImplementedError

    def trusted(self) -> None:
        raise NotImplementedError

    def arm_body(self) -> None:
        raise NotImplementedError

    def body_expired(self) -> None:
        raise NotImplementedError

    def _try_head(self) -> None:
        raise NotImplementedError

    def _connect(self, ex: Exchange) -> None:
        raise NotImplementedError

    def _drop_upstream(self, ex: Exchange) -> None:
        raise NotImplementedError

    def _gateway_timeout(self, ex: Exchange) -> None:
        raise NotImplementedError

    def upstream_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        raise NotImplementedError

    def upstream_failed(self, up: UpstreamConn, reason: str) -> None:
        raise NotImplementedError

    def response_head(self, head: Head, interim: bool = False) -> bytes:
        raise NotImplementedError

    def response_done(self, up: UpstreamConn, reusable: bool, force_close: bool = False) -> None:
        raise NotImplementedError

    def start_tunnel(self, up: UpstreamConn, head: Head, rest: bytes) -> None:
        raise NotImplementedError

    def _next(self) -> None:
        raise NotImplementedError

    def local_response(
        self, status: int, body: str | bytes, close: bool = False, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        raise NotImplementedError
