"""The proxy's connections: parse a request head, route it, relay both ways.

`ClientConn` is one client connection (plain or TLS); `UpstreamConn` one
connection to a target, kept alive in `UpstreamPool` (and kept at hand by the
client connection that used it last). Request and response bodies are relayed
as they arrive; only heads are parsed (`http1`). Backpressure pauses reading on
one side while the other side's write buffer is full, so memory stays bounded.
This is the hot path: it is written for speed (C-level byte scans, no per-request
timers: one deadline per client connection, enforced by the server's sweeper).

Deadlines on a client connection, one at a time: the request head
(`header_timeout`), the idle keep-alive wait (`keepalive_timeout`), and the wait
for the target's response head once the request has been handed to it
(`response_timeout`: 504, the target's connection closed, never pooled). Once
the first byte of a response arrives nothing times out: streams (SSE, chunked,
WebSocket) last as long as both ends want.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from reconciler.net.http1 import (
    CHUNKED,
    HEADER_LINES,
    HOP_BY_HOP,
    LENGTH,
    NONE,
    REASONS,
    TARGET_CHARS,
    UNTIL_CLOSE,
    ChunkScanner,
    Head,
    HttpError,
    header_dropper,
    parse_request_head,
    parse_response_head,
    request_framing,
    response_framing,
)
from reconciler.net.guard import ClientGuard, describe_oserror
from reconciler.routing.index import FOREIGN, LOCAL, Target
from reconciler.routing.pages import gateway_error, index_page, not_found_page

if TYPE_CHECKING:
    from reconciler.routing.proxy import ProxyServer

log = logging.getLogger("fleet.proxy")

_HEAD, _BODY, _WAIT, _TUNNEL, _CLOSED = range(5)
# Linux: the first byte of TCP_INFO is the socket's state; TCP_CLOSE once a reset arrived.
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_TCP_CLOSE = b"\x07"
# Connection tokens that name no header to drop beyond the usual ones; framing
# headers are never dropped, even when named in Connection (that would
# desynchronise the two sides' idea of where a message ends).
_CONN_TOKENS = frozenset({b"close", b"keep-alive", b"upgrade", b"content-length", b"transfer-encoding", b"host"})
_FORWARDED = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for"})
# Set by the proxy alone (a Modal host's port router reads it): a client's own is dropped.
_FLEET_PORT = frozenset({b"x-fleet-port"})
# Transfer-Encoding is kept: chunked bodies pass through as they are.
_DROP_REQUEST = header_dropper((HOP_BY_HOP - {b"transfer-encoding"}) | _FORWARDED | _FLEET_PORT)
_DROP_RESPONSE = header_dropper(HOP_BY_HOP - {b"transfer-encoding"})
_DROP_101 = header_dropper({b"connection", b"keep-alive", b"proxy-connection"})
_HOST_LINE = re.compile(rb"\r\nhost:[^\r\n]*", re.IGNORECASE)

# The fast paths: the common request (a body-less HTTP/1.1 GET-like request in
# one read) and the common response (a Content-Length body, in one read or
# more) are handled by one regex match and a few byte scans each. Anything
# else (bodies, chunked, upgrades, HTTP/1.0, several Connection tokens, 1xx,
# HEAD ...) falls through to the general path, which handles every case.
_HDRS = b"(" + HEADER_LINES + b")"  # http1's rules for a header section
_FAST_REQUEST = re.compile(rb"(GET|DELETE|OPTIONS) (/" + TARGET_CHARS + rb"*) HTTP/1\.1" + _HDRS)
_FAST_RESPONSE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9](?: [^\x00-\x08\x0a-\x1f\x7f]*)?)" + _HDRS)


@functools.lru_cache(maxsize=64)
def _dropper(names: frozenset[bytes]) -> re.Pattern[bytes]:
    return header_dropper(names)


class Exchange:
    """One request/response on a client connection."""

    __slots__ = (
        "head_bytes",
        "method",
        "target",
        "hostname",
        "body_kind",
        "remaining",
        "scanner",
        "request_done",
        "response_started",
        "close_after",
        "upgrade",
        "pending",
        "pending_size",
        "retried",
    )

    def __init__(self, head_bytes: bytes, method: bytes, target: Target, hostname: str, body_kind: int, length: int):
        self.head_bytes = head_bytes
        self.method = method
        self.target = target
        self.hostname = hostname
        self.body_kind = body_kind
        self.remaining = length
        self.scanner = ChunkScanner() if body_kind == CHUNKED else None
        self.request_done = body_kind == NONE
        self.response_started = False
        self.close_after = False
        self.upgrade = False
        self.pending: list[bytes] = []  # body bytes waiting for the upstream connection
        self.pending_size = 0
        self.retried = False


PLAIN_READ = 64 * 1024  # the read size for plain connections


class _Pausable(asyncio.Protocol):
    """Reading paused for as long as any reason holds."""

    transport: asyncio.Transport | None = None
    server: "ProxyServer"

    def __init__(self) -> None:
        self._reasons: set[str] = set()

    @staticmethod
    def _tune(transport: asyncio.BaseTransport) -> None:
        """asyncio reads plain sockets 256 KiB at a time into a fresh bytes object:
        glibc serves that size with mmap, mremap and munmap, three system calls per
        read that cost more than the proxying itself. 64 KiB reads come from the heap."""
        if getattr(transport, "max_size", 0) > PLAIN_READ:
            transport.max_size = PLAIN_READ  # type: ignore[attr-defined]

    def pause(self, reason: str) -> None:
        if not self._reasons and self.transport is not None:
            self.transport.pause_reading()
        self._reasons.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self._reasons:
            self._reasons.discard(reason)
            if not self._reasons and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()


class UpstreamConn(_Pausable):
    """A connection to a target; attached to one client exchange at a time."""

    def __init__(self, server: "ProxyServer", target: Target):
        super().__init__()
        self.server = server
        self.target = target
        self.client: ClientConn | None = None
        self.transport: asyncio.Transport | None = None
        self.state = _HEAD
        self.buf = bytearray()
        self.kind = NONE
        self.remaining = 0
        self.scanner: ChunkScanner | None = None
        self.reusable = True
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._tune(transport)
        self.transport.set_write_buffer_limits(high=self.server.config.high_water)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause("upstream-full")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume("upstream-full")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.pool.forget(self)
        client = self.client
        self.client = None
        if client is not None:
            if self.state == _TUNNEL:
                client.close()
            elif self.state == _BODY and self.kind == UNTIL_CLOSE:
                client.response_done(self, reusable=False, force_close=True)
            else:
                client.upstream_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None or client.upstream is not self:  # idle: the target spoke out of turn
            if client is not None and client.idle_up is self:
                client.idle_up = None
            self.close()
            return
        self.got_bytes = True
        client.deadline = None  # the target answers: no response timeout from here on
        state = self.state
        if state == _BODY and self.kind == LENGTH and len(data) < self.remaining:
            self.remaining -= len(data)
            client.write(data)
            return
        if state == _TUNNEL:
            client.write(data)
            return
        if state == _HEAD and not self.buf and self._fast_response(client, data):
            return
        try:
            self._on_bytes(client, data)
        except HttpError as exc:
            self.reusable = False
            client.upstream_failed(self, f"bad response: {exc}")

    def _fast_response(self, client: "ClientConn", data: bytes) -> bool:
        """The common response, relayed without the general machinery; False
        (having changed nothing) when it is anything else."""
        idx = data.find(b"\r\n\r\n")
        if idx <= 0 or idx + 4 > self.server.config.max_header_bytes:
            return False
        m = _FAST_RESPONSE.fullmatch(data, 0, idx)
        ex = client.exchange
        if m is None or ex is None or ex.upgrade or ex.method == b"HEAD":
            return False
        status, block = m.group(1, 2)
        if status[:3] in (b"204", b"304"):
            return False
        low = block.lower()
        if b"\r\ntransfer-encoding:" in low:
            return False
        i = low.find(b"\r\ncontent-length:")  # exactly one, all digits
        if i < 0:
            return False
        end = low.find(b"\r\n", i + 17)
        if end < 0:
            end = len(low)
        value = low[i + 17 : end].strip(b" \t")
        if not value.isdigit() or len(value) > 18 or low.find(b"\r\ncontent-length:", end) >= 0:
            return False
        length = int(value)
        i = low.find(b"\r\nconnection:")  # at most one, keep-alive or close
        if i >= 0:
            end = low.find(b"\r\n", i + 13)
            if end < 0:
                end = len(low)
            token = low[i + 13 : end].strip(b" \t")
            if token == b"close":
                if low.find(b"\r\nconnection:", end) >= 0:
                    return False
                self.reusable = False
            elif token != b"keep-alive" or low.find(b"\r\nconnection:", end) >= 0:
                return False
        body = len(data) - idx - 4
        if body > length:
            return False
        if ex.close_after or client.eof:
            tail = b"\r\nConnection: close\r\n\r\n"
        elif client.client_version == b"1.0":
            tail = b"\r\nConnection: keep-alive\r\n\r\n"
        else:
            tail = b"\r\n\r\n"
        ex.response_started = True
        out = b"HTTP/1.1 " + status + _DROP_RESPONSE.sub(b"", block) + tail
        client.write(out + data[idx + 4 :] if body else out)
        if body == length:
            client.response_done(self, self.reusable)
        else:
            self.kind = LENGTH
            self.remaining = length - body
            self.state = _BODY
        return True

    def _on_bytes(self, client: "ClientConn", data: bytes) -> None:
        while data:
            if self.state == _HEAD:
                if self.buf:
                    self.buf += data
                    data = bytes(self.buf)
                    self.buf.clear()
                idx = data.find(b"\r\n\r\n")
                if idx < 0:
                    if len(data) > self.server.config.max_header_bytes:
                        raise HttpError(502, "response head too large")
                    self.buf += data
                    return
                head = parse_response_head(data[:idx])
                rest = data[idx + 4 :]
                data = rest
                ex = client.exchange
                if ex is None:
                    raise HttpError(502, "response without a request")
                if 100 <= head.status < 200 and head.status != 101:
                    client.write(client.response_head(head, interim=True))
                    if ex.request_done:
                        client.arm_response()  # the final head is still to come
                    else:
                        client.arm_body()
                    continue
                if head.status == 101:
                    if not ex.upgrade:
                        raise HttpError(502, "101 Switching Protocols without an upgrade request")
                    self.state = _TUNNEL
                    self.reusable = False
                    client.start_tunnel(self, head, rest)
                    return
                if ex.upgrade:
                    self.reusable = False  # it may have been told Connection: upgrade
                if head.version == b"1.0" and b"keep-alive" not in head.connection:
                    self.reusable = False
                elif b"close" in head.connection:
                    self.reusable = False
                kind, length = response_framing(head, ex.method)
                self.kind, self.remaining = kind, length
                if kind == UNTIL_CLOSE:
                    self.reusable = False
                    ex.close_after = True
                self.scanner = ChunkScanner() if kind == CHUNKED else None
                out = client.response_head(head)
                ex.response_started = True
                if kind == NONE:
                    client.write(out)
                    if data:
                        self.reusable = False
                    self._done(client)
                    return
                self.state = _BODY
                if data:
                    end = self._body_end(data)
                    if end < 0:
                        client.write(out + data)
                        return
                    client.write(out + data[:end])
                    if end < len(data):
                        self.reusable = False
                    self._done(client)
                else:
                    client.write(out)
                return
            # _BODY
            end = self._body_end(data)
            if end < 0:
                client.write(data)
                return
            client.write(data[:end])
            if end < len(data):
                self.reusable = False
            self._done(client)
            return

    def _body_end(self, data: bytes) -> int:
        """Index just past the response body's end in `data`, or -1."""
        if self.kind == LENGTH:
            if len(data) < self.remaining:
                self.remaining -= len(data)
                return -1
            end = self.remaining
            self.remaining = 0
            return end
        if self.kind == CHUNKED:
            assert self.scanner is not None
            return self.scanner.feed(data)
        return -1  # until close

    def _done(self, client: "ClientConn") -> None:
        self.state = _HEAD
        self.scanner = None
        client.response_done(self, reusable=self.reusable)

    # pool life
    def detach(self) -> None:
        self.client = None
        self.resume("client-full")

    def close(self) -> None:
        self.client = None
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        self.client = None
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True


class UpstreamPool:
    """Idle keep-alive connections per target (LIFO), closed after an idle time."""

    def __init__(self, server: "ProxyServer"):
        self.server = server
        self.idle: dict[tuple[str, str, int], list[UpstreamConn]] = {}

    def acquire(self, target: Target) -> UpstreamConn | None:
        conns = self.idle.get(target.key)
        while conns:
            up = conns.pop()
            if not up.closed and up.transport is not None and not up.transport.is_closing():
                up.reused = True
                up.got_bytes = False
                up.target = target
                return up
        return None

    def release(self, up: UpstreamConn) -> None:
        up.detach()
        cfg = self.server.config
        conns = self.idle.setdefault(up.target.key, [])
        if up.closed or len(conns) >= cfg.pool_max_idle:
            up.close()
            return
        up.idle_since = time.monotonic()
        conns.append(up)

    def sweep(self, now: float) -> None:
        """Close connections idle for longer than the pool's idle timeout."""
        limit = now - self.server.config.pool_idle_timeout
        for key, conns in list(self.idle.items()):
            stale = [up for up in conns if up.idle_since < limit]
            for up in stale:
                conns.remove(up)
                up.close()
            if not conns:
                del self.idle[key]

    def forget(self, up: UpstreamConn) -> None:
        conns = self.idle.get(up.target.key)
        if conns and up in conns:
            conns.remove(up)

    def close_all(self) -> None:
        for conns in self.idle.values():
            for up in conns:
                up.close()
        self.idle.clear()


class ClientConn(ClientGuard, _Pausable):
    """One client connection: parses request heads, routes, relays."""

    def __init__(self, server: "ProxyServer", port: int, scheme: str):
        super().__init__()
        self.server = server
        self.cfg = server.config
        self.port = port
        self.scheme = scheme
        self.scheme_b = scheme.encode()
        self.transport: asyncio.Transport | None = None
        self.peer = "127.0.0.1"
        self.peer_b = b"127.0.0.1"
        self.buf = bytearray()
        self.state = _HEAD
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
        self.transport = transport  # type: ignore[assignment]
        self._tune(transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0]
            self.peer_b = self.peer.encode()
        self.forwarded = (
            b"\r\nX-Forwarded-For: " + self.peer_b + b"\r\nX-Forwarded-Proto: " + self.scheme_b + b"\r\nX-Forwarded-Host: "
        )
        self.transport.set_write_buffer_limits(high=self.cfg.high_water)  # type: ignore[union-attr]
        self.server.clients.add(self)
        self._arm(self.cfg.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = _CLOSED
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
        if self.state == _TUNNEL or self.scheme == "https":
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
        if self.state == _CLOSED or ex is None or ex.response_started or t is None or t.is_closing():
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

    def data_received(self, data: bytes) -> None:
        st = self.state
        if st == _TUNNEL:
            if self.upstream is not None:
                self.upstream.transport.write(data)  # type: ignore[union-attr]
            return
        if st == _BODY:
            self._feed_body(data)
            return
        if st == _CLOSED:
            return
        if st == _HEAD and not self.buf:
            if self._fast_request(data):
                return
            # exactly one whole request head, no body bytes behind it
            idx = data.find(b"\r\n\r\n")
            if idx > 0 and idx + 4 == len(data) and idx < self.cfg.max_header_bytes and data[:2] != b"\r\n":
                self.deadline = None
                self.head_started = False
                try:
                    self._dispatch(parse_request_head(data[:idx]))
                except HttpError as exc:
                    self.local_response(exc.status, f"fleet proxy: {exc}\n", close=True)
                return
        self.buf += data
        if st == _HEAD:
            self._try_head()
        elif len(self.buf) > self.cfg.max_header_bytes:
            self.pause("pipeline")  # the next request waits for this response

    def _fast_request(self, data: bytes) -> bool:
        """The common request, routed without the general machinery; False
        (having changed nothing) when it is anything else."""
        idx = len(data) - 4
        if idx <= 0 or len(data) > self.cfg.max_header_bytes or data.find(b"\r\n\r\n") != idx:
            return False
        m = _FAST_REQUEST.fullmatch(data, 0, idx)
        if m is None:
            return False
        method, target, block = m.group(1, 2, 3)
        low = block.lower()
        if b"\r\ncontent-length:" in low or b"\r\ntransfer-encoding:" in low or b"\r\nx-forwarded-for:" in low:
            return False
        i = low.find(b"\r\nhost:")  # exactly one
        if i < 0:
            return False
        end = low.find(b"\r\n", i + 7)
        if end < 0:
            end = len(low)
        elif low.find(b"\r\nhost:", end) >= 0:
            return False
        host = block[i + 7 : end].strip(b" \t")
        keep_alive = True
        i = low.find(b"\r\nconnection:")  # at most one, keep-alive or close
        if i >= 0:
            end = low.find(b"\r\n", i + 13)
            if end < 0:
                end = len(low)
            elif low.find(b"\r\nconnection:", end) >= 0:
                return False
            token = low[i + 13 : end].strip(b" \t")
            if token == b"close":
                keep_alive = False
            elif token != b"keep-alive":
                return False
        kind, hostname, t = self.server.index.lookup(self.port, host)
        if t is None or t.host_header is not None or not host:
            return False
        self.deadline = None
        self.head_started = False
        self.trusted()
        self.keep_alive = keep_alive
        self.client_version = b"1.1"
        out = b"".join(
            (method, b" ", target, b" HTTP/1.1", _DROP_REQUEST.sub(b"", block), self.forwarded, host,
             b"\r\nConnection: keep-alive\r\n\r\n")
        )
        ex = Exchange(out, method, t, hostname, NONE, 0)
        ex.close_after = not keep_alive
        self.exchange = ex
        self.state = _WAIT
        self._connect(ex)
        return True

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
        if st == _HEAD:
            if self.buf.strip(b"\r\n"):
                self.local_response(408, "fleet proxy: request head not received in time\n", close=True)
            else:
                self.close()
        elif st == _BODY:
            self.body_expired()
        elif st == _WAIT:
            ex = self.exchange
            if ex is not None and ex.request_done and not ex.response_started and self.upstream is not None:
                self._gateway_timeout(ex)

    # writing
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def close(self) -> None:
        self.state = _CLOSED
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    # requests
    def _try_head(self) -> None:
        buf = self.buf
        if buf.startswith(b"\r\n"):  # stray CRLFs between requests are allowed
            while buf.startswith(b"\r\n"):
                del buf[:2]
            if not buf:
                return
        if not self.head_started and buf:
            self.head_started = True
            self._arm(self.cfg.header_timeout)
        idx = buf.find(b"\r\n\r\n")
        if idx < 0:
            if len(buf) > self.cfg.max_header_bytes:
                self.local_response(431, "fleet proxy: request head too large\n", close=True)
            return
        if idx + 4 > self.cfg.max_header_bytes:
            self.local_response(431, "fleet proxy: request head too large\n", close=True)
            return
        raw = bytes(buf[:idx])
        del buf[: idx + 4]
        self._disarm()
        self.head_started = False
        try:
            head = parse_request_head(raw)
            self._dispatch(head)
        except HttpError as exc:
            self.local_response(exc.status, f"fleet proxy: {exc}\n", close=True)

    def _dispatch(self, head: Head) -> None:
        self.trusted()
        self.client_version = version = head.version
        conn_tokens = head.connection
        if version == b"1.0":
            self.keep_alive = b"keep-alive" in conn_tokens
        else:
            self.keep_alive = b"close" not in conn_tokens
        target = head.target
        hosts = head.get_all(b"host")
        if len(hosts) > 1:
            raise HttpError(400, "more than one Host header")
        host = hosts[0] if hosts else b""
        if target[:1] != b"/":
            if head.method == b"CONNECT":
                raise HttpError(405, "CONNECT is not supported: this is a reverse proxy")
            if target != b"*":  # absolute-form: its authority is the host
                u = urlsplit(target.decode("latin-1"))
                if u.scheme not in ("http", "https") or not u.netloc:
                    raise HttpError(400, "malformed request target")
                host = u.netloc.encode("latin-1")
                target = (u.path or "/").encode("latin-1") + (b"?" + u.query.encode("latin-1") if u.query else b"")
        if not host:
            raise HttpError(400, "no Host header")
        body_kind, length = request_framing(head)
        kind, hostname, t = self.server.index.lookup(self.port, host)
        if t is None:
            if kind == LOCAL:
                self._index(head, body_kind)
            elif kind == FOREIGN:
                self.local_response(
                    421,
                    f"fleet proxy: refusing Host {hostname!r}: only localhost names are routed here\n",
                    close=body_kind != NONE,
                )
            else:
                self._not_found(head, hostname, body_kind)
            return
        upgrade = b"upgrade" in conn_tokens and head.has(b"upgrade")
        ex = Exchange(self._request_head(head, target, host, t, upgrade), head.method, t, hostname, body_kind, length)
        ex.upgrade = upgrade
        ex.close_after = not self.keep_alive
        self.exchange = ex
        buf = self.buf
        if ex.request_done:
            self.state = _WAIT
            self._connect(ex)
        else:
            self.state = _BODY
            self.arm_body()
            self._connect(ex)
            if buf:
                rest = bytes(buf)
                buf.clear()
                self._feed_body(rest)

    def _request_head(self, head: Head, target: bytes, host: bytes, t: Target, upgrade: bool) -> bytes:
        block = _DROP_REQUEST.sub(b"", head.block)
        extra = head.connection - _CONN_TOKENS
        if extra:
            block = _dropper(frozenset(extra)).sub(b"", block)
        if t.host_header is not None:
            block = _HOST_LINE.sub(b"\r\nHost: " + t.host_header.replace(b"\\", b""), block, count=1)
        peer = self.peer_b
        xff = head.get_all(b"x-forwarded-for") if head.has(b"x-forwarded-for") else None
        parts = [
            head.method,
            b" ",
            target,
            b" HTTP/",
            head.version,
            block,
            b"\r\nX-Forwarded-For: ",
            b", ".join([*xff, peer]) if xff else peer,
            b"\r\nX-Forwarded-Proto: ",
            self.scheme_b,
            b"\r\nX-Forwarded-Host: ",
            host,
            t.extra_header,
        ]
        if upgrade:
            parts += [b"\r\nConnection: Upgrade\r\nUpgrade: ", head.get(b"upgrade") or b"", b"\r\n\r\n"]
        else:
            parts.append(b"\r\nConnection: keep-alive\r\n\r\n")
        return b"".join(parts)

    def _feed_body(self, data: bytes) -> None:
        self.body_seen += len(data)
        ex = self.exchange
        if ex is None:
            return
        if ex.body_kind == LENGTH:
            if len(data) < ex.remaining:
                ex.remaining -= len(data)
                self._send(ex, data)
                return
            end = ex.remaining
            ex.remaining = 0
        else:
            assert ex.scanner is not None
            try:
                end = ex.scanner.feed(data)
            except HttpError as exc:
                ex.close_after = True
                if ex.response_started:
                    self.close()
                else:
                    self._drop_upstream(ex)
                    self.local_response(400, f"fleet proxy: {exc}\n", close=True)
                return
            if end < 0:
                self._send(ex, data)
                return
        self._send(ex, data[:end])
        ex.request_done = True
        self.state = _WAIT
        if self.upstream is not None and not ex.response_started:
            self.arm_response()
        if end < len(data):
            self.buf += data[end:]
            if len(self.buf) > self.cfg.max_header_bytes:
                self.pause("pipeline")

    def _send(self, ex: Exchange, data: bytes) -> None:
        if not data:
            return
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
            return
        ex.pending.append(data)
        ex.pending_size += len(data)
        if ex.pending_size > self.cfg.high_water:
            self.pause("connect")

    # upstream
    def _connect(self, ex: Exchange) -> None:
        up = self.idle_up
        if up is not None:
            self.idle_up = None
            if up.target.key == ex.target.key and not up.closed and not up.transport.is_closing():  # type: ignore[union-attr]
                up.reused = True
                up.got_bytes = False
                up.target = ex.target
                self._attach(ex, up)
                return
            self.server.pool.release(up)
        up = self.server.pool.acquire(ex.target)
        if up is not None:
            self._attach(ex, up)
            return
        self.connecting = asyncio.get_running_loop().create_task(self._open(ex))

    async def _open(self, ex: Exchange) -> None:
        t = ex.target
        loop = asyncio.get_running_loop()
        try:
            ssl_ctx = self.server.upstream_ssl() if t.scheme == "https" else None
            _, up = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConn(self.server, t),
                    t.host,
                    t.port,
                    ssl=ssl_ctx,
                    server_hostname=t.host if ssl_ctx else None,
                ),
                self.cfg.connect_timeout,
            )
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self._bad_gateway(ex, f"no answer within {self.cfg.connect_timeout:g}s")
            return
        except ssl.SSLCertVerificationError as exc:
            self._bad_gateway(ex, f"TLS verification failed: {exc.verify_message}")
            return
        except OSError as exc:
            self._bad_gateway(ex, describe_oserror(exc))
            return
        finally:
            self.connecting = None
        if self.exchange is not ex or self.state == _CLOSED:
            up.close()
            return
        self._attach(ex, up)

    def _attach(self, ex: Exchange, up: UpstreamConn) -> None:
        self.upstream = up
        up.client = self
        up.state = _HEAD
        up.buf.clear()
        up.reusable = True
        assert up.transport is not None
        if ex.pending:
            up.transport.write(ex.head_bytes + b"".join(ex.pending))
            ex.pending.clear()
            ex.pending_size = 0
            self.resume("connect")
        else:
            up.transport.write(ex.head_bytes)
        if ex.request_done:
            self.deadline = time.monotonic() + self.cfg.response_timeout

    def upstream_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        """The target closed before the response was complete."""
        if up is self.idle_up:
            self.idle_up = None
            return
        ex = self.exchange
        if up is not self.upstream or ex is None:
            return
        self.upstream = None
        if ex.response_started:
            self.close()
            return
        if up.reused and not up.got_bytes and ex.body_kind == NONE and not ex.retried and not ex.upgrade:
            ex.retried = True  # a kept-alive connection the target had closed: retry once
            self.connecting = asyncio.get_running_loop().create_task(self._open(ex))
            return
        self._bad_gateway(ex, "closed the connection" + (f" ({describe_oserror(exc)})" if exc else ""))

    def upstream_failed(self, up: UpstreamConn, reason: str) -> None:
        ex = self.exchange
        up.close()
        if up is not self.upstream or ex is None:
            return
        self.upstream = None
        if ex.response_started:
            self.close()
        else:
            self._bad_gateway(ex, reason)

    def _drop_upstream(self, ex: Exchange) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    def _bad_gateway(self, ex: Exchange, reason: str) -> None:
        if self.exchange is not ex or self.state == _CLOSED:
            return
        t = ex.target
        msg = gateway_error(t, f"is not answering at {t.route.target}: {reason}")
        log.warning("502 %s -> %s: %s", ex.hostname, t.route.target, reason)
        self.exchange = None
        self.local_response(502, msg, close=ex.close_after or not ex.request_done)

    def _gateway_timeout(self, ex: Exchange) -> None:
        """The target took the whole request and sent no response head within the
        response timeout: 504. Its connection may still answer late, so it is
        closed, never pooled; the client's connection stays usable."""
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.close()
        self.server.probing.discard(self)
        if self._reasons:  # the upstream that held the client back is gone
            self.resume("upstream-full")
            self.resume("connect")
        t = ex.target
        secs = f"{self.cfg.response_timeout:g}s"
        msg = gateway_error(
            t,
            f"took the request at {t.route.target} but sent no response within {secs} "
            f"(the proxy's response timeout, FLEET_PROXY_RESPONSE_TIMEOUT)",
        )
        log.warning("504 %s -> %s: no response within %s", ex.hostname, t.route.target, secs)
        self.exchange = None
        self.local_response(504, msg, close=ex.close_after)

    def response_head(self, head: Head, interim: bool = False) -> bytes:
        block = _DROP_RESPONSE.sub(b"", head.block)
        extra = head.connection - _CONN_TOKENS
        if extra:
            block = _dropper(frozenset(extra)).sub(b"", block)
        first = b"HTTP/1.1" + head.first[8:]
        if interim:
            return first + block + b"\r\n\r\n"
        ex = self.exchange
        if ex is None or ex.close_after or self.eof:
            return first + block + b"\r\nConnection: close\r\n\r\n"
        if self.client_version == b"1.0":
            return first + block + b"\r\nConnection: keep-alive\r\n\r\n"
        return first + block + b"\r\n\r\n"

    def start_tunnel(self, up: UpstreamConn, head: Head, rest: bytes) -> None:
        block = _DROP_101.sub(b"", head.block)
        self.write(b"HTTP/1.1" + head.first[8:] + block + b"\r\nConnection: Upgrade\r\n\r\n" + rest)
        self.state = _TUNNEL
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
            if self._reasons:
                self.resume("upstream-full")
            if reusable and ex is not None and ex.request_done and not force_close:
                # keep it at hand: the next request on this connection most
                # likely goes to the same target
                if self.idle_up is not None:
                    self.server.pool.release(self.idle_up)
                self.idle_up = up
                if up._reasons:
                    up.resume("client-full")
            else:
                up.close()
        if ex is None or force_close or ex.close_after or not ex.request_done or self.eof:
            self.close()
            return
        self._next()

    def _next(self) -> None:
        self.state = _HEAD
        if self._reasons:
            self.resume("pipeline")
        if self.buf:
            # a pipelined request: parse it on the next loop turn (no recursion)
            self._arm(self.cfg.header_timeout)
            asyncio.get_running_loop().call_soon(self._pipelined)
        else:
            self._arm(self.cfg.keepalive_timeout)

    def _pipelined(self) -> None:
        if self.state == _HEAD and self.buf:
            self._try_head()

    # local answers
    def local_response(
        self, status: int, body: str | bytes, close: bool = False, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        close = close or not self.keep_alive or self.eof
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
            f"Cache-Control: no-store\r\nServer: fleet-proxy\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode()
        self.write(head + data)
        self.exchange = None
        if close:
            self.close()
        else:
            self._next()

    def _index(self, head: Head, body_kind: int) -> None:
        ctype, body = index_page(self.server.index, self.port, self.scheme, head.get(b"accept") or b"")
        self.local_response(200, body, close=body_kind != NONE, content_type=ctype)

    def _not_found(self, head: Head, hostname: str, body_kind: int) -> None:
        ctype, body = not_found_page(self.server.index, self.port, self.scheme, hostname, head.get(b"accept") or b"")
        self.local_response(404, body, close=body_kind != NONE, content_type=ctype)
