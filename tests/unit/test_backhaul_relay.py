"""The backhaul end to end in one machine: the real relay script (backhaul_relay.RELAY)
as a local python3 subprocess, its stdin/stdout the two pipes, and the local side
(backhaul.Backhaul) dialling a test server here. Same bytes as over a Modal exec,
without a sandbox: many concurrent streams, big bodies both ways, half-close,
backpressure on a slow reader at either end, resets, restart of a killed relay and
clean teardown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from reconciler.providers.modal import backhaul_proto as p
from reconciler.providers.modal.backhaul import Backhaul, Limits, subprocess_opener
from tests.conftest import free_port

LIMITS = Limits(ping_interval=0.5, dead_after=5.0, hello_timeout=10.0)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()  # the client half-closed: so do we, after echoing everything
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def relay(handler=echo, **kw) -> AsyncIterator[tuple[Backhaul, int, asyncio.Task[None]]]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = free_port()
    bh = Backhaul(subprocess_opener(), server.sockets[0].getsockname()[:2], port,
                  pidfile=f"/tmp/fleet-backhaul-test-{port}.pid", limits=kw.pop("limits", LIMITS),
                  backoff=(0.1, 1.0), **kw)
    task = asyncio.ensure_future(bh.run())
    try:
        await asyncio.wait_for(bh.up.wait(), 10)
        yield bh, port, task
    finally:
        await stop(task)
        server.close()
        with contextlib.suppress(OSError):
            os.unlink(f"/tmp/fleet-backhaul-test-{port}.pid")


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


async def roundtrip(port: int, body: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)

    async def send() -> None:
        w.write(body)
        await w.drain()
        w.write_eof()

    sender = asyncio.ensure_future(send())
    got = await r.read(-1)
    await sender
    w.close()
    return got


def test_concurrent_streams_and_big_bodies_arrive_intact():
    async def go() -> None:
        async with relay() as (bh, port, _):
            bodies = [os.urandom(n) for n in [1, 10, 1000, 65536, 65537, 300_000] * 5]
            got = await asyncio.gather(*(roundtrip(port, b) for b in bodies))
            assert [hashlib.sha256(g).hexdigest() for g in got] == [hashlib.sha256(b).hexdigest() for b in bodies]
            big = os.urandom(10 * 1024 * 1024)
            assert await roundtrip(port, big) == big
            assert bh.session is not None
            await asyncio.sleep(0.2)
            assert bh.session.streams == {}, "closed streams are forgotten"
            assert bh.session.opened == len(bodies) + 1 and bh.starts == 1
    run(go())


def test_half_close_lets_the_reply_come_back():
    async def answer_after_eof(reader, writer):
        request = await reader.read(-1)  # reads until the client's FIN arrives
        writer.write(b"got %d bytes" % len(request))
        await writer.drain()
        writer.close()

    async def go() -> None:
        async with relay(answer_after_eof) as (_, port, _t):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x" * 5000)
            w.write_eof()
            assert await asyncio.wait_for(r.read(-1), 10) == b"got 5000 bytes"
            w.close()
    run(go())


def test_slow_upstream_holds_the_sender_at_the_window():
    gate = asyncio.Event()
    received = bytearray()

    async def slow(reader, writer):
        await gate.wait()
        while data := await reader.read(65536):
            received.extend(data)
        writer.close()

    async def go() -> None:
        async with relay(slow) as (bh, port, _):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            body = os.urandom(1 << 20) * 64
            w.write(body)
            await asyncio.sleep(1.5)
            # the upstream reads nothing: the relay may not send past the window, so the
            # client's bytes pile up in ITS buffer (and the kernel's), not in ours
            assert bh.session is not None
            (st,) = bh.session.streams.values()
            assert 0 <= p.INITIAL_WINDOW - st.allowed <= p.INITIAL_WINDOW
            assert w.transport.get_write_buffer_size() > 8 * 1024 * 1024
            assert relay_rss(port) < 40 * 1024 * 1024
            gate.set()
            w.write_eof()
            await w.drain()
            await asyncio.wait_for(r.read(-1), 30)
            assert bytes(received) == body
    run(go())


def test_slow_client_in_the_sandbox_holds_the_upstream_at_the_window():
    sent = asyncio.Event()
    body = os.urandom(1 << 20) * 64
    writer_box = []

    async def firehose(reader, writer):
        writer_box.append(writer)
        writer.write(body)
        await writer.drain()
        writer.close()
        sent.set()

    async def go() -> None:
        async with relay(firehose) as (bh, port, _):
            r, w = await asyncio.open_connection("127.0.0.1", port, limit=65536)
            await asyncio.sleep(1.5)  # read nothing yet
            assert not sent.is_set()
            assert bh.session is not None
            (st,) = bh.session.streams.values()
            assert st.credit <= p.MAX_PAYLOAD  # the local side stopped reading the upstream
            assert writer_box[0].transport.get_write_buffer_size() > 8 * 1024 * 1024
            assert relay_rss(port) < 40 * 1024 * 1024
            got = await asyncio.wait_for(r.read(-1), 30)
            assert got == body
    run(go())


def test_unreachable_upstream_closes_the_client_connection():
    async def go() -> None:
        port = free_port()
        bh = Backhaul(subprocess_opener(), ("127.0.0.1", free_port()), port,
                      pidfile=f"/tmp/fleet-backhaul-test-{port}.pid", limits=LIMITS)
        task = asyncio.ensure_future(bh.run())
        await asyncio.wait_for(bh.up.wait(), 10)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            assert await asyncio.wait_for(r.read(-1), 10) == b""
        assert bh.up.is_set() and bh.starts == 1  # one stream failed, not the session
        await stop(task)
    run(go())


def test_a_killed_relay_is_restarted_and_open_streams_end():
    async def go() -> None:
        async with relay() as (bh, port, _):
            assert await roundtrip(port, b"before") == b"before"
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"open")
            assert await r.readexactly(4) == b"open"
            pid = int(open(f"/tmp/fleet-backhaul-test-{port}.pid").read())
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(r.read(-1), 10) == b""  # the connection ended
            await asyncio.wait_for(_wait(lambda: bh.starts == 2 and bh.up.is_set()), 10)
            assert bh.ended == ["the exec ended"]
            assert await roundtrip(port, b"after") == b"after"
    run(go())


def test_cancel_tears_down_the_relay_and_frees_the_port():
    async def go() -> None:
        async with relay() as (bh, port, task):
            pid = int(open(f"/tmp/fleet-backhaul-test-{port}.pid").read())
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x")
            assert await r.readexactly(1) == b"x"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.wait_for(_wait(lambda: not os.path.exists(f"/proc/{pid}")
                                         or open(f"/proc/{pid}/stat").read().split()[2] == "Z"), 10)
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
    run(go())


def test_a_new_relay_replaces_one_that_still_holds_the_port():
    """The local side lost its exec but the old relay lives on (the stream dropped,
    not the process): the new one ends it and takes the port over."""

    async def go() -> None:
        async with relay() as (bh, port, _):
            first = int(open(f"/tmp/fleet-backhaul-test-{port}.pid").read())
            other = Backhaul(subprocess_opener(), bh.upstream, port, pidfile=f"/tmp/fleet-backhaul-test-{port}.pid",
                             limits=LIMITS)
            task = asyncio.ensure_future(other.run())
            await asyncio.wait_for(other.up.wait(), 10)
            assert int(open(f"/tmp/fleet-backhaul-test-{port}.pid").read()) != first
            assert await roundtrip(port, b"new") == b"new"
            await stop(task)
    run(go())


def relay_rss(port: int) -> int:
    pid = int(open(f"/tmp/fleet-backhaul-test-{port}.pid").read())
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _wait(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.05)


def test_an_abort_at_either_end_reaches_the_other_and_frees_the_stream():
    closed = asyncio.Queue()

    async def hold(reader, writer):
        writer.write(b"ready")
        await writer.drain()
        try:
            while await reader.read(65536):
                pass
            closed.put_nowait("eof")
        except ConnectionError:
            closed.put_nowait("reset")
        if writer.transport.get_extra_info("peername") and not writer.is_closing():
            writer.transport.abort()

    async def go() -> None:
        async with relay(hold) as (bh, port, _):
            # the client in the sandbox aborts mid-stream: the upstream connection ends
            r, w = await asyncio.open_connection("127.0.0.1", port)
            assert await r.readexactly(5) == b"ready"
            w.write(os.urandom(100_000))
            await w.drain()
            w.transport.abort()
            assert await asyncio.wait_for(closed.get(), 10) in ("eof", "reset")
            await asyncio.wait_for(_wait(lambda: bh.session is not None and not bh.session.streams), 10)

            # the upstream aborts: the client's connection ends
            r, w = await asyncio.open_connection("127.0.0.1", port)
            assert await r.readexactly(5) == b"ready"
            w.write_eof()  # upstream sees EOF and aborts its side
            assert await asyncio.wait_for(closed.get(), 10) == "eof"
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(r.read(-1), 10) == b""
            await asyncio.wait_for(_wait(lambda: bh.session is not None and not bh.session.streams), 10)
            assert bh.starts == 1
    run(go())


def test_the_relay_exits_when_the_local_side_goes_silent():
    from reconciler.providers.modal.backhaul_relay import relay_argv

    async def go() -> None:
        port = free_port()
        pidfile = f"/tmp/fleet-backhaul-test-{port}.pid"
        channel = await subprocess_opener()(relay_argv(port, pidfile, idle=1.0))
        try:
            assert p.Decoder().feed(await asyncio.wait_for(channel.read(), 10)) == [p.Frame(p.HELLO, 0, p.MAGIC)]
            # no PING, no anything: it gives up within its idle limit (+ its 1 s tick)
            assert await asyncio.wait_for(channel.read(), 10) == b""
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", port)
        finally:
            await channel.close()
            with contextlib.suppress(OSError):
                os.unlink(pidfile)
    run(go())


@pytest.mark.slow
def test_soak_many_streams_with_aborts():
    """300 streams, 64 at a time, random sizes; every fifth client aborts halfway."""
    import random

    async def go() -> None:
        async with relay() as (bh, port, _):
            rnd = random.Random(7)
            sem = asyncio.Semaphore(60)

            async def one(i: int) -> None:
                async with sem:
                    body = os.urandom(rnd.choice([1, 500, 70_000, 1_500_000]))
                    if i % 5:
                        assert await roundtrip(port, body) == body
                        return
                    r, w = await asyncio.open_connection("127.0.0.1", port)
                    w.write(body)
                    await r.read(1)
                    w.transport.abort()

            await asyncio.gather(*(one(i) for i in range(300)))
            await asyncio.wait_for(_wait(lambda: bh.session is not None and not bh.session.streams), 20)
            assert bh.starts == 1 and bh.session.opened == 300
    asyncio.run(asyncio.wait_for(go(), 300))
