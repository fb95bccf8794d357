"""Requests on one client connection of the grants forward proxy: each head
parsed by `reconciler.net.http1`, the caller authenticated (407 otherwise),
then CONNECT (`forward_connect`) or a plain `http://` request, forwarded
without any credential (a secret only ever goes over TLS)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from reconciler.grants import agents as agentmap
from reconciler.grants import netlog
from reconciler.grants.forward_connect import connect
from reconciler.grants.forward_exchange import Client, exchange
from reconciler.grants.forward_wire import AUTHENTICATE, Answer, answer, read_head, reflecting
from reconciler.net.http1 import Head, HttpError, parse_request_head, request_framing, request_host
from reconciler.net.limits import Slot
from reconciler.net.responses import rewrite_head

log = logging.getLogger("fleet.grants")


async def serve(c: Client, slot: Slot | None = None) -> None:
    """Serve requests on one connection until it closes or one ends it."""
    timeout = c.config.header_timeout
    peer = c.peer
    while True:
        try:
            raw = await read_head(c.reader, timeout)
        except Answer as exc:
            await answer(c.writer, exc.status, str(exc))
            return
        if raw is None:
            return
        timeout = c.config.idle_timeout
        try:
            head = parse_request_head(raw)
            request_host(head)  # never more than one
        except HttpError as exc:
            await answer(c.writer, exc.status, str(exc))
            return
        who = c.access.authenticate(head)
        if who is None:
            had = bool(head.get_all(b"proxy-authorization"))
            log.warning(
                "grants: 407 %s %s from %s (%s)", head.method.decode("latin-1"),
                head.target.decode("latin-1").split("?", 1)[0][:200],
                peer[0] if peer else "?", "unknown credential" if had else "no credential",
                extra={"source": peer[0] if peer else "?"},
            )
            await answer(c.writer, 407, "fleet-proxy: proxy authentication required (use the HTTPS_PROXY fleet set for this agent)",
                         AUTHENTICATE)
            return
        key, entry = who
        if not await c.access.from_owner(entry, peer, head):
            await answer(c.writer, 407, "fleet-proxy: this proxy credential belongs to another container", AUTHENTICATE)
            return
        if slot is not None:
            slot.trusted()  # an accepted credential: no longer counted against the source's pending cap
        if head.method == b"CONNECT":
            await connect(c, head, key, entry)
            return
        if not await plain(c, head, raw, entry):
            return


async def plain(c: Client, head: Head, raw: bytes, entry: agentmap.AgentEntry) -> bool:
    """Forward one plain http:// request; whether the connection goes on."""
    u = urlsplit(head.target.decode("latin-1"))
    method = head.method.decode("latin-1")
    record = dict(method=method, host=(u.hostname or "?"), port=u.port or 80, path=(u.path or "/"), grant=None, mode="http")
    if u.scheme != "http" or not u.hostname:
        netlog.record(entry.fleet, entry.agent, status=400, error="not an absolute http:// URL", **record)
        await answer(c.writer, 400, "fleet-proxy: expected an absolute http:// URL (use CONNECT for https)")
        return False
    if reflecting(head.method):
        netlog.record(entry.fleet, entry.agent, status=405, error="TRACE/TRACK refused", **record)
        await answer(c.writer, 405, f"fleet-proxy: {method} is refused")
        return False
    try:
        kind, length = request_framing(head)  # before anything goes upstream
    except HttpError as exc:
        netlog.record(entry.fleet, entry.agent, status=exc.status, error=str(exc), **record)
        await answer(c.writer, exc.status, f"fleet-proxy: {exc}")
        return False
    host, port = u.hostname.lower().rstrip("."), u.port or 80
    origin = (u.path or "/") + (f"?{u.query}" if u.query else "")
    first = b" ".join([head.method, origin.encode("latin-1"), b"HTTP/1.1"])
    drop = {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"} | head.tokens(b"connection")
    out_head = rewrite_head(raw, drop - {b"transfer-encoding", b"content-length", b"host"}, [("Connection", "close")], first=first)
    upstream = await c.upstreams.open_or_answer(host, port, False, entry, record, c.writer)
    if upstream is None:
        return False
    up_r, up_w = upstream
    try:
        status, keep = await exchange(c, head, kind, length, out_head, up_r, up_w, plain=True)
    finally:
        up_w.close()
    netlog.record(entry.fleet, entry.agent, status=status, **record)
    return keep
