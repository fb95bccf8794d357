"""CONNECT through the grants forward proxy: to a host one of the caller's
grants covers, TLS is terminated with a leaf from the interception CA and
each request inside gets the grant's header (replacing whatever placeholder
the client sent) before it goes to the real host over verified TLS; to any
other host, a byte tunnel, untouched."""

from __future__ import annotations

import asyncio
import ssl

from reconciler.core.errors import FleetError
from reconciler.grants import agents as agentmap
from reconciler.grants import netlog
from reconciler.grants.catalogue import pick
from reconciler.grants.forward_exchange import Client, exchange
from reconciler.grants.forward_upstream import Streams
from reconciler.grants.forward_wire import AUTHENTICATE, Answer, answer, read_head, reflecting, split_authority
from reconciler.net.http1 import Head, HttpError, parse_request_head, request_framing, request_host
from reconciler.net.pipes import pipe_both
from reconciler.net.responses import rewrite_head

ALLOW = [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]


async def connect(c: Client, head: Head, key: str, entry: agentmap.AgentEntry) -> None:
    try:
        host, port = split_authority(head.target.decode("latin-1"), 443)
    except Answer as exc:
        await answer(c.writer, exc.status, str(exc))
        return
    if any(r.host == host and r.port == port for r in entry.rules):
        await intercept(c, host, port, key, entry)
    else:
        await tunnel(c, host, port, entry)


async def tunnel(c: Client, host: str, port: int, entry: agentmap.AgentEntry) -> None:
    record = dict(method="CONNECT", host=host, port=port, path="", grant=None, mode="tunnel")
    upstream = await c.upstreams.open_or_answer(host, port, False, entry, record, c.writer)
    if upstream is None:
        return
    up_r, up_w = upstream
    netlog.record(entry.fleet, entry.agent, status=200, **record)
    c.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await c.writer.drain()
    try:
        await pipe_both(c.reader, c.writer, up_r, up_w)
    finally:
        up_w.close()


async def intercept(c: Client, host: str, port: int, key: str, entry: agentmap.AgentEntry) -> None:
    writer = c.writer
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    try:
        await writer.start_tls(c.ca.leaf_context(host), ssl_handshake_timeout=c.config.header_timeout)
    except (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError) as exc:
        netlog.record(entry.fleet, entry.agent, method="CONNECT", host=host, port=port, path="", status=None,
                      grant=None, mode="intercept",
                      error=f"TLS with the agent failed ({exc.__class__.__name__}); is /etc/fleet/ca-bundle.crt trusted?")
        return
    upstream: Streams | None = None
    try:
        while True:
            try:
                raw = await read_head(c.reader, c.config.idle_timeout)
            except Answer as exc:
                await answer(writer, exc.status, str(exc))
                return
            if raw is None:
                return
            current = c.access.entries.get(key)
            if current is None or not await c.access.from_owner(current, c.peer):  # revoked, or re-bound elsewhere
                await answer(writer, 407, "fleet-proxy: this agent's proxy credential was revoked", AUTHENTICATE)
                return
            try:
                head = parse_request_head(raw)
            except HttpError as exc:
                await answer(writer, exc.status, str(exc))
                return
            path = head.target.decode("latin-1")
            method = head.method.decode("latin-1")
            if reflecting(head.method):
                netlog.record(current.fleet, current.agent, method=method, host=host, port=port,
                              path=path, grant=None, mode="intercept", status=405, error="TRACE/TRACK refused")
                await answer(writer, 405, f"fleet-proxy: {method} is refused (it would echo the injected credential)", ALLOW)
                return
            rule = pick([r for r in current.rules if r.host == host and r.port == port], host, port, path)
            record = dict(method=method, host=host, port=port, path=path, grant=rule.grant if rule else None, mode="intercept")
            try:  # framing and Host before anything goes upstream
                if request_host(head) is None and head.version == b"1.1":
                    raise HttpError(400, "no Host header")
                kind, length = request_framing(head)
            except HttpError as exc:
                netlog.record(current.fleet, current.agent, status=exc.status, error=str(exc), **record)
                await answer(writer, exc.status, f"fleet-proxy: {exc}")
                return
            try:
                add = c.access.credential_header(rule) if rule else []
            except (FleetError, Answer) as exc:
                netlog.record(current.fleet, current.agent, status=502, error=str(exc).split(";")[0], **record)
                await answer(writer, 502, f"fleet-proxy: {exc}")
                return
            drop = {b"proxy-authorization", b"proxy-connection"}
            if rule:
                drop.add(rule.header.lower().encode())
            out_head = rewrite_head(raw, drop, add)
            if upstream is None:
                upstream = await c.upstreams.open_or_answer(host, port, True, current, record, writer)
                if upstream is None:
                    return
            status, keep = await exchange(c, head, kind, length, out_head, upstream[0], upstream[1], plain=False)
            netlog.record(current.fleet, current.agent, status=status, **record)
            if not keep:
                return
    finally:
        if upstream is not None:
            upstream[1].close()
