"""Connecting a client's exchange to its target, and what happens when the
target fails it: 502 (not answering, closed early, a bad response), 504 (took
the request, sent no response head within the response timeout). A kept-alive
connection the target had already closed is retried once (body-less requests).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

from reconciler.net.guard import describe_oserror
from reconciler.net.http1 import NONE
from reconciler.routing.conn import ClientBase
from reconciler.routing.exchange import CLOSED, HEAD, Exchange
from reconciler.routing.pages import gateway_error
from reconciler.routing.socks import socks_connect
from reconciler.routing.upstream import UpstreamConn

log = logging.getLogger("fleet.proxy")


class Connecting(ClientBase):
    def _connect(self, ex: Exchange) -> None:
        up = self.idle_up
        if up is not None:
            self.idle_up = None
            t = up.transport  # inline (the hot path): up.usable()
            if up.target.key == ex.target.key and not up.closed and t is not None and not t.is_closing():
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
            if t.route.engine is not None:  # on a remote engine: through its SSH link's SOCKS forward
                via = await asyncio.wait_for(self._via_link(ex, ssl_ctx), self.cfg.connect_timeout)
                if via is None:
                    return
                up = via
            else:
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
        if self.exchange is not ex or self.state == CLOSED:
            up.close()
            return
        self._attach(ex, up)

    async def _via_link(self, ex: Exchange, ssl_ctx: ssl.SSLContext | None) -> UpstreamConn | None:
        """Connect to a remote engine's target through the engine's link
        (routing/links.py); None having answered 502 when the link is down."""
        t = ex.target
        links = self.server.links
        where = links.socks_for(t.route.engine) if links is not None else "no engine links in this proxy"
        if isinstance(where, str):
            self._bad_gateway(ex, where)
            return None
        try:
            sock = await socks_connect(where, t.host, t.port)
        except OSError as exc:  # the link went down this moment
            self._bad_gateway(ex, f"the SSH link to engine {t.route.engine} did not connect ({describe_oserror(exc)})")
            return None
        _, up = await asyncio.get_running_loop().create_connection(
            lambda: UpstreamConn(self.server, t), sock=sock, ssl=ssl_ctx,
            server_hostname=t.host if ssl_ctx else None,
        )
        return up

    def _attach(self, ex: Exchange, up: UpstreamConn) -> None:
        self.upstream = up
        up.client = self
        up.state = HEAD
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
        if ex.request_done:  # inline (the hot path): self.arm_response()
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
        if self.exchange is not ex or self.state == CLOSED:
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
        if self.paused_for:  # the upstream that held the client back is gone
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
