"""The request side of a client connection: read request heads, route them by
Host, pass them on rewritten (`rewrite`), relay request bodies.

The common request (a body-less HTTP/1.1 GET, DELETE or OPTIONS in one read,
one Host, at most one keep-alive/close token, a route without a Host
override) is routed by `_fast_request` with one regex match and a few byte
scans; everything else goes through `http1.parse_request_head` and `_dispatch`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from reconciler.net.http1 import LENGTH, NONE, Head, HttpError, parse_request_head, request_framing
from reconciler.net.responses import keeps_alive
from reconciler.routing.conn import ClientBase
from reconciler.routing.exchange import BODY, CLOSED, HEAD, TUNNEL, WAIT, Exchange
from reconciler.routing.index import FOREIGN, LOCAL
from reconciler.routing.pages import index_page, not_found_page
from reconciler.routing.rewrite import DROP_REQUEST, FAST_REQUEST, KEEP_ALIVE_TAIL, request_head


class RequestSide(ClientBase):
    def data_received(self, data: bytes) -> None:
        st = self.state
        if st == TUNNEL:
            up = self.upstream
            if up is not None and up.transport is not None:
                up.transport.write(data)
            return
        if st == BODY:
            self._feed_body(data)
            return
        if st == CLOSED:
            return
        if st == HEAD and not self.buf:
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
        if st == HEAD:
            self._try_head()
        elif len(self.buf) > self.cfg.max_header_bytes:
            self.pause("pipeline")  # the next request waits for this response

    def _fast_request(self, data: bytes) -> bool:
        """The common request, routed without the general machinery; False
        (having changed nothing) when it is anything else."""
        idx = len(data) - 4
        if idx <= 0 or len(data) > self.cfg.max_header_bytes or data.find(b"\r\n\r\n") != idx:
            return False
        m = FAST_REQUEST.fullmatch(data, 0, idx)
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
            (method, b" ", target, b" HTTP/1.1", DROP_REQUEST.sub(b"", block), self.forwarded, host, KEEP_ALIVE_TAIL)
        )
        ex = Exchange(out, method, t, hostname, NONE, 0)
        ex.close_after = not keep_alive
        self.exchange = ex
        self.state = WAIT
        self._connect(ex)
        return True

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
        self.client_version = head.version
        conn_tokens = head.connection
        self.keep_alive = keeps_alive(head.version, conn_tokens)
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
        out = request_head(head, target, host, t, upgrade, self.peer_b, self.scheme_b)
        ex = Exchange(out, head.method, t, hostname, body_kind, length)
        ex.upgrade = upgrade
        ex.close_after = not self.keep_alive
        self.exchange = ex
        buf = self.buf
        if ex.request_done:
            self.state = WAIT
            self._connect(ex)
        else:
            self.state = BODY
            self.arm_body()
            self._connect(ex)
            if buf:
                rest = bytes(buf)
                buf.clear()
                self._feed_body(rest)

    def _feed_body(self, data: bytes) -> None:
        self.body_seen += len(data)
        ex = self.exchange
        if ex is None or ex.body is None:
            return
        body = ex.body
        if body.kind == LENGTH and len(data) < body.remaining:
            body.remaining -= len(data)
            self._send(ex, data)
            return
        try:
            end = body.feed(data)
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
        self.state = WAIT
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

    # pages the proxy answers itself
    def _index(self, head: Head, body_kind: int) -> None:
        ctype, body = index_page(self.server.index, self.port, self.scheme, head.get(b"accept") or b"")
        self.local_response(200, body, close=body_kind != NONE, content_type=ctype)

    def _not_found(self, head: Head, hostname: str, body_kind: int) -> None:
        ctype, body = not_found_page(self.server.index, self.port, self.scheme, hostname, head.get(b"accept") or b"")
        self.local_response(404, body, close=body_kind != NONE, content_type=ctype)
