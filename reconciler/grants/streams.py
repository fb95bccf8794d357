"""Moving bytes for the forward proxy: one message body, or both directions.

A body is delimited by the framing `reconciler.net.http1` decided for its
head (one Content-Length rule for both proxies), and never read past its end,
so the next request on a kept-alive connection starts where it should. Chunked
framing is checked by http1's `ChunkScanner` as it passes (the same strict rules
as the routing proxy: every line ends in CRLF, the CRLF after each chunk's data
is required, sizes are hex of bounded length); a malformed piece is never
forwarded, the copy stops with `HttpError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from reconciler.net.http1 import CHUNKED, LENGTH, NONE, UNTIL_CLOSE, ChunkScanner, HttpError

BUF = 64 * 1024


async def copy_exactly(n: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy exactly `n` bytes (an upstream that ends early is an error)."""
    while n:
        data = await src.read(min(BUF, n))
        if not data:
            raise asyncio.IncompleteReadError(b"", n)
        dst.write(data)
        n -= len(data)
        await dst.drain()


async def copy_chunked(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy one chunked body, trailers included, validating as it goes."""
    scanner = ChunkScanner()
    while True:
        if scanner.remaining:  # inside a chunk's data: read no more than it has
            data = await src.read(min(BUF, scanner.remaining))
            if not data:
                raise asyncio.IncompleteReadError(b"", scanner.remaining)
        else:  # a size line, the CRLF after data, or a trailer line
            try:
                data = await src.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                raise HttpError(400, "chunk line too long") from None
        end = scanner.feed(data)  # raises before a malformed piece is forwarded
        dst.write(data)
        if end >= 0:
            await dst.drain()
            return
        await dst.drain()


async def copy_body(kind: int, length: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy one message body, framed as `kind`, without reading past its end."""
    if kind == NONE:
        return
    if kind == LENGTH:
        await copy_exactly(length, src, dst)
        return
    if kind == CHUNKED:
        await copy_chunked(src, dst)
        return
    if kind == UNTIL_CLOSE:
        while True:
            data = await src.read(BUF)
            if not data:
                return
            dst.write(data)
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
