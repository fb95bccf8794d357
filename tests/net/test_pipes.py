"""net.pipes: body copying and piping over real loopback
TCP connections, and backpressure on a real transport."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.net.http1 import CHUNKED, LENGTH, NONE, UNTIL_CLOSE, HttpError
from reconciler.net.pipes import (
    PLAIN_READ,
    Pausable,
    copy_body,
    copy_exactly,
    pipe_both,
    tune_read_size,
)


# -- copying over real streams ------------------------------------------------------------


class Sink:
    """A loopback TCP server that keeps what it reads; `writer` is connected to it."""

    async def __aenter__(self) -> "Sink":
        self.got = bytearray()
        self.done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                self.got += data
            self.done.set()
            writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        _, self.writer = await asyncio.open_connection("127.0.0.1", port)
        return self

    async def received(self) -> bytes:
        self.writer.close()
        await asyncio.wait_for(self.done.wait(), 10)
        return bytes(self.got)

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()
        self.server.close()
        await self.server.wait_closed()


def source(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader(limit=1024)
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_copy_body_length_stops_at_the_end():
    async def main() -> tuple[bytes, bytes]:
        src = source(b"x" * 100_000 + b"NEXT")
        async with Sink() as sink:
            await copy_body(LENGTH, 100_000, src, sink.writer)
            return await sink.received(), await src.read()

    got, rest = run(main())
    assert got == b"x" * 100_000 and rest == b"NEXT"


def test_copy_body_chunked_keeps_the_framing_and_stops_at_the_end():
    body = b"4\r\nwiki\r\n10;ext=1\r\n" + b"p" * 16 + b"\r\n0\r\nT: v\r\n\r\n"

    async def main() -> tuple[bytes, bytes]:
        src = source(body + b"GET / HTTP/1.1\r\n\r\n")
        async with Sink() as sink:
            await copy_body(CHUNKED, 0, src, sink.writer)
            return await sink.received(), await src.read()

    got, rest = run(main())
    assert got == body and rest == b"GET / HTTP/1.1\r\n\r\n"


def test_copy_body_chunked_never_forwards_a_malformed_piece():
    async def main() -> bytes:
        src = source(b"4\r\nwiki\r\n5\nsmugg\r\n0\r\n\r\n")  # a bare LF after the second size
        async with Sink() as sink:
            with pytest.raises(HttpError):
                await copy_body(CHUNKED, 0, src, sink.writer)
            return await sink.received()

    assert run(main()) == b"4\r\nwiki\r\n"


def test_copy_body_until_close_and_none():
    async def main() -> bytes:
        async with Sink() as sink:
            await copy_body(NONE, 0, source(b"untouched", eof=False), sink.writer)
            await copy_body(UNTIL_CLOSE, 0, source(b"a" * 70_000), sink.writer)
            return await sink.received()

    assert run(main()) == b"a" * 70_000


def test_copy_exactly_refuses_a_short_source():
    async def main() -> None:
        async with Sink() as sink:
            await copy_exactly(10, source(b"short"), sink.writer)

    with pytest.raises(asyncio.IncompleteReadError):
        run(main())


def test_pipe_both_relays_both_ways_and_passes_the_half_close_on():
    async def main() -> tuple[bytes, bytes]:
        # backend: echoes in upper case until EOF, then says bye (it saw the half-close)
        async def backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data.upper())
            writer.write(b"|bye")
            await writer.drain()
            writer.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", back_port)
            await pipe_both(reader, writer, up_r, up_w)
            writer.close()
            up_w.close()

        back = await asyncio.start_server(backend, "127.0.0.1", 0)
        back_port = back.sockets[0].getsockname()[1]
        front = await asyncio.start_server(relay, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", front.sockets[0].getsockname()[1])
        w.write(b"hello " * 20_000)
        await w.drain()
        w.write_eof()
        got = await r.read()
        w.close()
        for s in (front, back):
            s.close()
            await s.wait_closed()
        return got, b"HELLO " * 20_000 + b"|bye"

    got, want = run(main())
    assert got == want


# -- backpressure on a real transport ---------------------------------------------------------


def test_pausable_reads_only_when_no_reason_holds_and_reads_64k():
    async def main() -> list[bool]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(Pausable, "127.0.0.1", server.sockets[0].getsockname()[1])
        tune_read_size(transport)
        seen = [getattr(transport, "max_size") == PLAIN_READ, transport.is_reading()]
        proto.pause("a")
        proto.pause("b")
        seen.append(transport.is_reading())
        proto.resume("a")
        seen.append(transport.is_reading())
        proto.resume("never-held")
        seen.append(transport.is_reading())
        proto.resume("b")
        seen.append(transport.is_reading())
        transport.close()
        proto.resume("b")  # resuming a closing transport is harmless
        server.close()
        await server.wait_closed()
        return seen

    assert run(main()) == [True, True, False, False, False, True]
