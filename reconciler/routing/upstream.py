"""Connections to targets: `UpstreamConn` relays one response at a time back to
the client connection it is attached to; `UpstreamPool` keeps idle ones alive.

Only response heads are parsed (`http1`); bodies pass as they arrive, their end
found by http1's `Body`. The common response (HTTP/1.1, one Content-Length,
at most one keep-alive/close token) takes a fast path of a few byte scans.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Protocol

from reconciler.net.http1 import LENGTH, NONE, UNTIL_CLOSE, Body, Head, HttpError, parse_response_head, response_framing
from reconciler.net.pipes import Pausable, tune_read_size
from reconciler.routing.config import ProxyConfig
from reconciler.routing.exchange import BODY, HEAD, TUNNEL, Exchange
from reconciler.routing.index import RouteIndex, Target
from reconciler.routing.rewrite import CLOSE_TAIL, DROP_RESPONSE, END_TAIL, FAST_RESPONSE, KEEP_ALIVE_TAIL

_NO_BODY = Body(NONE)  # never changes: feed() of an empty body touches nothing


class RelayServer(Protocol):
    """What connections need from the proxy server (`proxy.ProxyServer`)."""

    config: ProxyConfig
    index: RouteIndex
    pool: "UpstreamPool"
    clients: set[Any]
    probing: set[Any]
    links: Any  # routing.links.EngineLinks, or None: remote engines' targets answer 502

    def upstream_ssl(self) -> ssl.SSLContext: ...


class ClientSide(Protocol):
    """What an upstream connection needs from its client connection (`relay.ClientConn`)."""

    exchange: Exchange | None
    upstream: "UpstreamConn | None"
    idle_up: "UpstreamConn | None"
    deadline: float | None
    eof: bool
    client_version: bytes

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def pause(self, reason: str) -> None: ...
    def resume(self, reason: str) -> None: ...
    def arm_response(self) -> None: ...
    def arm_body(self) -> None: ...
    def response_head(self, head: Head, interim: bool = False) -> bytes: ...
    def response_done(self, up: "UpstreamConn", reusable: bool, force_close: bool = False) -> None: ...
    def start_tunnel(self, up: "UpstreamConn", head: Head, rest: bytes) -> None: ...
    def upstream_lost(self, up: "UpstreamConn", exc: Exception | None) -> None: ...
    def upstream_failed(self, up: "UpstreamConn", reason: str) -> None: ...


class UpstreamConn(Pausable):
    """A connection to a target; attached to one client exchange at a time."""

    def __init__(self, server: RelayServer, target: Target):
        super().__init__()
        self.server = server
        self.target = target
        self.client: ClientSide | None = None
        self.transport: asyncio.Transport | None = None
        self.state = HEAD
        self.buf = bytearray()
        self.body = _NO_BODY  # the response body's end
        self.reusable = True
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tune_read_size(transport)
        transport.set_write_buffer_limits(high=self.server.config.high_water)

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
            if self.state == TUNNEL:
                client.close()
            elif self.state == BODY and self.body.kind == UNTIL_CLOSE:
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
        if state == BODY:
            body = self.body
            if body.kind == LENGTH and len(data) < body.remaining:
                body.remaining -= len(data)
                client.write(data)
                return
        elif state == TUNNEL:
            client.write(data)
            return
        elif state == HEAD and not self.buf and self._fast_response(client, data):
            return
        try:
            self._on_bytes(client, data)
        except HttpError as exc:
            self.reusable = False
            client.upstream_failed(self, f"bad response: {exc}")

    def _fast_response(self, client: ClientSide, data: bytes) -> bool:
        """The common response, relayed without the general machinery; False
        (having changed nothing) when it is anything else."""
        idx = data.find(b"\r\n\r\n")
        if idx <= 0 or idx + 4 > self.server.config.max_header_bytes:
            return False
        m = FAST_RESPONSE.fullmatch(data, 0, idx)
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
            tail = CLOSE_TAIL
        elif client.client_version == b"1.0":
            tail = KEEP_ALIVE_TAIL
        else:
            tail = END_TAIL
        ex.response_started = True
        out = b"HTTP/1.1 " + status + DROP_RESPONSE.sub(b"", block) + tail
        client.write(out + data[idx + 4 :] if body else out)
        if body == length:
            client.response_done(self, self.reusable)
        else:
            self.body = Body(LENGTH, length - body)
            self.state = BODY
        return True

    def _on_bytes(self, client: ClientSide, data: bytes) -> None:
        while data:
            if self.state == HEAD:
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
                    self.state = TUNNEL
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
                self.body = Body(kind, length)
                if kind == UNTIL_CLOSE:
                    self.reusable = False
                    ex.close_after = True
                out = client.response_head(head)
                ex.response_started = True
                if kind == NONE:
                    client.write(out)
                    if data:
                        self.reusable = False
                    self._done(client)
                    return
                self.state = BODY
                if data:
                    end = self.body.feed(data)
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
            # BODY
            end = self.body.feed(data)
            if end < 0:
                client.write(data)
                return
            client.write(data[:end])
            if end < len(data):
                self.reusable = False
            self._done(client)
            return

    def _done(self, client: ClientSide) -> None:
        self.state = HEAD
        self.body = _NO_BODY
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

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()


PoolKey = tuple[str, str, int, int, str]


class UpstreamPool:
    """Idle keep-alive connections per target (LIFO), closed after an idle time."""

    def __init__(self, server: RelayServer):
        self.server = server
        self.idle: dict[PoolKey, list[UpstreamConn]] = {}

    def acquire(self, target: Target) -> UpstreamConn | None:
        conns = self.idle.get(target.key)
        while conns:
            up = conns.pop()
            if up.usable():
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
