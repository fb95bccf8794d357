"""Moving bytes for the forward proxy: one message body, or both directions.

A body is delimited by the framing `reconciler.net.http1` decided for its
head (one Content-Length rule for both proxies), and never read past its end,
so the next request on a kept-alive connection starts where it should. Every
piece read is checked by http1's `Body` before it is forwarded (chunked: CRLF
ending every line, the CRLF after each chunk's data, bounded hex sizes, strict
extensions and trailers), so a malformed piece is never forwarded: the copy
stops with `HttpError`. A body cut short is `asyncio.IncompleteReadError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from reconciler.net.http1 import NONE, Body, HttpError

BUF = 64 * 1024


async def copy_body(kind: int, length: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy one message body, framed as `kind`, without reading past its end."""
    if kind == NONE:
        return
    body = Body(kind, length)
    while not body.done:
        want = body.wanted()
        if want:  # a Content-Length rest, a chunk's data (at most that much), or anything until close (-1)
            data = await src.read(BUF if want < 0 else min(BUF, want))
        else:  # a chunk size line, the CRLF after data, or a trailer line
            try:
                data = await src.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(400, "chunk line too long") from None
        if not data:
            if want < 0:
                return  # until close: the end
            raise asyncio.IncompleteReadError(b"", want)
        end = body.feed(data)  # raises before a malformed piece is forwarded
        dst.write(data if end < 0 else data[:end])
        await dst.drain()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(BUF)
            if not data:
                break
            dst.write(data)
            await dst.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if dst.can_write_eof():
                dst.write_eof()
            else:
                dst.close()


async def pipe_both(a_r, a_w, b_r, b_w) -> None:
    await asyncio.gather(pipe(a_r, b_w), pipe(b_r, a_w))
