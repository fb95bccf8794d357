"""Moving bytes: message bodies and both directions of a connection.

For asyncio protocols (the routing proxy's callbacks):
- `Pausable`: reading paused for as long as any named reason holds
  (backpressure: "the other side's write buffer is full", "still connecting" ...);
- `tune_read_size(transport)`: read plain sockets 64 KiB at a time;
(Where a body ends in the bytes passing by is http1's `Body`.)

For asyncio streams (the grants forward proxy: its request and response bodies,
its CONNECT tunnels):
- `copy_body(kind, length, src, dst)`: one message body, never read past its
  end (so the next request on a kept-alive connection starts where it should);
  a malformed chunked piece is never forwarded: the copy stops with HttpError;
- `pipe(src, dst)` and `pipe_both(...)`: raw bytes until EOF, passing the
  half-close on (a tunnel, or a connection after 101 Switching Protocols).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from reconciler.net.http1 import CHUNKED, LENGTH, UNTIL_CLOSE, ChunkScanner, HttpError

BUF = 64 * 1024
PLAIN_READ = 64 * 1024  # the read size for plain connections


def tune_read_size(transport: asyncio.BaseTransport, size: int = PLAIN_READ) -> None:
    """asyncio reads plain sockets 256 KiB at a time into a fresh bytes object:
    glibc serves that size with mmap, mremap and munmap, three system calls per
    read that cost more than the proxying itself. 64 KiB reads come from the heap."""
    if getattr(transport, "max_size", 0) > size:
        transport.max_size = size  # type: ignore[attr-defined]  # a private knob of asyncio's socket transports


class Pausable(asyncio.Protocol):
    """A protocol whose reading is paused while any reason in `paused_for` holds."""

    transport: asyncio.Transport | None = None

    def __init__(self) -> None:
        self.paused_for: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # subclasses set it themselves
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def pause(self, reason: str) -> None:
        if not self.paused_for and self.transport is not None:
            self.transport.pause_reading()
        self.paused_for.add(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused_for:
            self.paused_for.discard(reason)
            if not self.paused_for and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()


async def copy_exactly(n: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy exactly `n` bytes (a source that ends early: IncompleteReadError)."""
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
        await dst.drain()
        if end >= 0:
            return


async def copy_body(kind: int, length: int, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy one message body, framed as `kind`, without reading past its end."""
    if kind == LENGTH:
        await copy_exactly(length, src, dst)
    elif kind == CHUNKED:
        await copy_chunked(src, dst)
    elif kind == UNTIL_CLOSE:
        while data := await src.read(BUF):
            dst.write(data)
            await dst.drain()


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    """Copy until `src` ends (or either side fails), then pass the EOF on."""
    try:
        while data := await src.read(BUF):
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


async def pipe_both(
    a_r: asyncio.StreamReader, a_w: asyncio.StreamWriter, b_r: asyncio.StreamReader, b_w: asyncio.StreamWriter
) -> None:
    """Both directions between a and b, until both have ended."""
    await asyncio.gather(pipe(a_r, b_w), pipe(b_r, a_w))
