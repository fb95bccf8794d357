"""One request through the grants forward proxy: its head and body sent
upstream, the response relayed back (1xx interim responses, 101 upgrades,
keep-alive decided from both sides). A request body whose framing turns out
malformed midway stops the exchange with 400: the rest never goes upstream."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

from reconciler.grants.forward_access import Access
from reconciler.grants.forward_config import ForwardConfig
from reconciler.grants.forward_upstream import Upstreams
from reconciler.grants.forward_wire import answer
from reconciler.net.ca import CertificateAuthority
from reconciler.net.http1 import UNTIL_CLOSE, Head, HttpError, parse_response_head, response_framing
from reconciler.net.pipes import copy_body, pipe_both
from reconciler.net.responses import keeps_alive, rewrite_head


@dataclass
class Client:
    """One client connection of the forward proxy, and what serving it needs."""

    config: ForwardConfig
    ca: CertificateAuthority
    access: Access
    upstreams: Upstreams
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: tuple | None


async def _body_failed(body: asyncio.Task, reading: asyncio.Future) -> BaseException | None:
    """Wait for the response head or for the request body copy to fail on the
    client's side (malformed framing, or the body cut short), whichever comes
    first; that failure, if it came first. (A failure writing upstream is left
    to the response: an upstream may answer early, 413, and close.)"""
    if body.done():
        return None
    await asyncio.wait({body, reading}, return_when=asyncio.FIRST_COMPLETED)
    if reading.done() or body.cancelled():
        return None
    exc = body.exception()
    return exc if isinstance(exc, (HttpError, asyncio.IncompleteReadError)) else None


async def exchange(c: Client, head: Head, kind: int, length: int, out_head: bytes,
                   up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter, plain: bool) -> tuple[int, bool]:
    """Send one request (body framed as `kind`) upstream, relay its response;
    (status, keep-alive)."""
    writer = c.writer
    up_w.write(out_head)
    body = asyncio.create_task(copy_body(kind, length, c.reader, up_w))
    raw = b""
    try:
        while True:
            reading = asyncio.ensure_future(asyncio.wait_for(up_r.readuntil(b"\r\n\r\n"), c.config.idle_timeout))
            failed = await _body_failed(body, reading)
            if failed is not None:
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
                why = failed if isinstance(failed, HttpError) else "the request body was cut short"
                with contextlib.suppress(ConnectionError, OSError):
                    await answer(writer, 400, f"fleet-proxy: {why}")
                return 400, False
            try:
                raw = await reading
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError):
                if not body.done():
                    body.cancel()
                await answer(writer, 502, "fleet-proxy: the upstream closed the connection without a response")
                return 502, False
            try:
                rhead = parse_response_head(raw[:-4])
            except HttpError as exc:
                await answer(writer, 502, f"fleet-proxy: {exc}")
                return 502, False
            if 100 <= rhead.status < 200 and rhead.status != 101:
                writer.write(raw)  # interim (100 Continue): relay and read on
                await writer.drain()
                continue
            break
        if rhead.status == 101:
            writer.write(raw)
            await writer.drain()
            await body
            await pipe_both(c.reader, writer, up_r, up_w)
            return 101, False
        rkind, rlength = response_framing(rhead, head.method)
        keep = keeps_alive(head.version, head.connection) and keeps_alive(rhead.version, rhead.connection) and rkind != UNTIL_CLOSE
        if plain:
            drop = {b"connection", b"keep-alive", b"proxy-connection"}
            raw = rewrite_head(raw[:-4], drop, [] if keep else [("Connection", "close")])
        writer.write(raw)
        await copy_body(rkind, rlength, up_r, writer)
        await writer.drain()
        if not body.done():
            try:
                await asyncio.wait_for(asyncio.shield(body), 1.0)
            except asyncio.TimeoutError:
                body.cancel()
                keep = False
        elif body.cancelled() or body.exception() is not None:
            keep = False
        return rhead.status, keep
    finally:
        if not body.done():
            body.cancel()
        with contextlib.suppress(BaseException):
            await body
