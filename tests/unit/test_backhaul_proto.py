"""The backhaul protocol (reconciler/providers/modal/backhaul_proto.py) and the
local side's reaction to a hostile sandbox: framing round trips, every shape
rule, and garbage or rule-breaking input from the sandbox that must end the
session promptly with a reason, never crash it or hang it."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.providers.modal import backhaul_proto as p
from reconciler.providers.modal.backhaul import Limits, Session

# ---- framing ------------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from([p.DATA, p.RST]), st.integers(1, p.MAX_SID),
                          st.binary(min_size=1, max_size=2000)), max_size=20),
       st.integers(1, 50))
@settings(max_examples=60, deadline=None)
def test_frames_survive_any_split(frames, step):
    wire = b"".join(p.encode(t, sid, data[: p.MAX_REASON]) for t, sid, data in frames)
    dec = p.Decoder()
    got = []
    for i in range(0, len(wire), step):
        got += dec.feed(wire[i:i + step])
    assert [(f.type, f.sid, f.payload) for f in got] == [(t, s, d[: p.MAX_REASON]) for t, s, d in frames]
    assert dec.pending == 0


def test_max_payload_round_trips_and_one_more_byte_is_refused():
    data = bytes(range(256)) * (p.MAX_PAYLOAD // 256)
    assert p.Decoder().feed(p.encode(p.DATA, 7, data)) == [p.Frame(p.DATA, 7, data)]
    with pytest.raises(ValueError):
        p.encode(p.DATA, 7, data + b"x")
    with pytest.raises(p.ProtocolError, match="over"):
        p.Decoder().feed(p.HEADER.pack(p.DATA, 7, p.MAX_PAYLOAD + 1))  # refused from the header alone


@pytest.mark.parametrize("wire, problem", [
    (p.HEADER.pack(0, 1, 0), "unknown frame type 0"),
    (p.HEADER.pack(9, 1, 0), "unknown frame type 9"),
    (p.encode(p.DATA, 0, b"x"), "on stream 0"),
    (p.encode(p.PING, 3, b"12345678"), "not 0"),
    (p.encode(p.OPEN, 1, b"x"), "payload"),
    (p.encode(p.FIN, 1, b"x"), "payload"),
    (p.encode(p.DATA, 1), "empty DATA"),
    (p.encode(p.WINDOW, 1, b"\0\0\0"), "4-byte"),
    (p.window(1, 0), "at least 1"),
    (p.encode(p.PONG, 0, b"1234"), "8 bytes"),
    (p.encode(p.RST, 1, b"x" * (p.MAX_REASON + 1)), "reason"),
    (p.encode(p.HELLO, 0, b"fleet-backhaul/2"), "is not"),
])
def test_shape_rules(wire, problem):
    with pytest.raises(p.ProtocolError, match=problem):
        p.Decoder().feed(wire)


def test_the_relay_script_speaks_the_same_constants():
    """The relay is a second implementation of the spec (it cannot import this module)."""
    import re

    from reconciler.providers.modal.backhaul_relay import RELAY

    consts = dict(re.findall(r"^([A-Z_]+) = (.+)$", RELAY, re.M))
    for name in ("MAGIC", "MAX_PAYLOAD", "INITIAL_WINDOW", "MAX_WINDOW"):
        assert eval(consts[name]) == getattr(p, name), name  # noqa: S307 - our own literal
    assert "HELLO, OPEN, DATA, WINDOW, FIN, RST, PING, PONG = range(1, 9)" in RELAY
    assert consts["HEADER"] == 'struct.Struct(">BII")'


def test_window_increment_reads_back():
    (f,) = p.Decoder().feed(p.window(5, 123456))
    assert (f.type, f.sid, p.increment(f)) == (p.WINDOW, 5, 123456)


# ---- the local side against a hostile sandbox ------------------------------------------------

FAST = Limits(ping_interval=0.2, dead_after=1.0, hello_timeout=1.0, connect_timeout=1.0)
HELLO = p.encode(p.HELLO, 0, p.MAGIC)


class Scripted:
    """An ExecChannel that plays back given stdout bytes, then ends (or stays open)."""

    def __init__(self, chunks: list[bytes], end: bool = True) -> None:
        self.chunks = list(chunks)
        self.end = end
        self.written = bytearray()
        self.closed = False

    async def read(self) -> bytes:
        if self.chunks:
            await asyncio.sleep(0)
            return self.chunks.pop(0)
        if self.end:
            return b""
        await asyncio.sleep(3600)
        return b""

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True


def serve(chunks: list[bytes], end: bool = True, upstream: tuple[str, int] = ("127.0.0.1", 9),
          limits: Limits = FAST) -> tuple[str, Scripted, Session]:
    async def go() -> tuple[str, Scripted, Session]:
        ch = Scripted(chunks, end)
        session = Session(ch, upstream, limits)
        why = await asyncio.wait_for(session.run(), 10)
        return why, ch, session

    return asyncio.run(go())


@pytest.fixture(scope="module")
def sink():
    """A local upstream that accepts and reads everything (the sandbox opens real streams)."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def run() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=lambda c=conn: [None for _ in iter(lambda: c.recv(65536), b"")], daemon=True).start()

    threading.Thread(target=run, daemon=True).start()
    yield srv.getsockname()[:2]
    stop.set()
    srv.close()


@pytest.mark.parametrize("chunks, reason", [
    ([b"GET / HTTP/1.1\r\n\r\n"], "protocol error"),  # not a frame at all
    ([p.encode(p.OPEN, 1)], "before HELLO"),
    ([HELLO, HELLO], "unexpected"),
    ([HELLO, p.encode(p.PING, 0, b"12345678")], "unexpected"),
    ([HELLO, p.encode(p.OPEN, 2), p.encode(p.OPEN, 2)], "OPEN 2 after 2"),
    ([HELLO, p.encode(p.DATA, 5, b"x")], "never opened"),
    ([HELLO, p.encode(p.OPEN, 1), p.encode(p.FIN, 1), p.encode(p.FIN, 1)], "second FIN"),
    ([HELLO, p.encode(p.OPEN, 1), p.encode(p.FIN, 1), p.encode(p.DATA, 1, b"x")], "DATA after FIN"),
    # in one read, so nothing of it can be consumed (and credited back) in between
    ([HELLO, p.encode(p.OPEN, 1) + p.encode(p.DATA, 1, b"x" * p.MAX_PAYLOAD) * (p.INITIAL_WINDOW // p.MAX_PAYLOAD + 1)],
     "beyond the window"),
    ([HELLO, p.encode(p.OPEN, 1)] + [p.window(1, 1 << 29)] * 3, "window over"),
    ([HELLO, p.HEADER.pack(p.DATA, 1, 0xFFFFFFFF)], "over 65536"),
    ([HELLO + b"\0\0"], "the exec ended"),  # a torn frame, then the end
])
def test_rule_breaking_sandbox_ends_the_session(chunks, reason, sink):
    why, ch, session = serve(chunks, upstream=sink)
    assert reason in why
    assert ch.closed and session.streams == {}


def test_silent_relay_is_dropped():
    why, ch, _ = serve([], end=False)
    assert why == "the relay did not start" and ch.closed
    why, ch, _ = serve([HELLO], end=False)
    assert "silent" in why and ch.closed
    assert p.encode(p.PING, 0, (1).to_bytes(8, "big")) in ch.written  # it did ask


def test_too_many_streams_are_refused_not_fatal(sink):
    limits = Limits(max_streams=2, ping_interval=0.2, dead_after=1.0, hello_timeout=1.0)
    opens = [p.encode(p.OPEN, sid) for sid in (1, 2, 3)]
    why, ch, session = serve([HELLO, *opens, p.encode(p.RST, 1), p.encode(p.OPEN, 4)],
                             upstream=sink, limits=limits)
    frames = p.Decoder().feed(bytes(ch.written))
    assert [f.sid for f in frames if f.type == p.RST] == [3]
    assert session.opened == 3  # 1, 2 and 4 (after 1 was reset)
    assert why == "the exec ended"


def test_frames_for_a_stream_that_ended_are_ignored(sink):
    why, _, _ = serve([HELLO, p.encode(p.OPEN, 1), p.encode(p.RST, 1), p.encode(p.DATA, 1, b"late"),
                       p.window(1, 10), p.encode(p.FIN, 1)], upstream=sink)
    assert why == "the exec ended"


def test_unreachable_upstream_resets_the_stream():
    why, ch, _ = serve([HELLO, p.encode(p.OPEN, 1), p.encode(p.DATA, 1, b"hi")], end=False,
                       upstream=("127.0.0.1", 1))
    assert "silent" in why  # the session itself stayed up until the relay went quiet
    rst = [f for f in p.Decoder().feed(bytes(ch.written)) if f.type == p.RST]
    assert rst and rst[0].sid == 1 and b"cannot reach the upstream" in rst[0].payload


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fuzzed_sandbox_output_never_crashes_or_hangs(data, sink):
    """Random bytes, and valid frames mutated at random, after a HELLO or not."""
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    frames = [HELLO] if rnd.random() < 0.8 else []
    for _ in range(rnd.randrange(0, 30)):
        t = rnd.choice([p.OPEN, p.DATA, p.WINDOW, p.FIN, p.RST, p.PONG, p.PING, p.HELLO, 0, 9, 255])
        sid = rnd.choice([0, 1, 2, 3, rnd.randrange(1 << 32)])
        payload = rnd.choice([b"", b"x", struct.pack(">I", rnd.randrange(1 << 32)), rnd.randbytes(rnd.randrange(0, 3000))])
        wire = p.HEADER.pack(t, sid, len(payload)) + payload
        if rnd.random() < 0.1:
            wire = bytearray(wire)
            wire[rnd.randrange(len(wire))] = rnd.randrange(256)
            wire = bytes(wire)
        frames.append(wire)
    if rnd.random() < 0.2:
        frames.append(rnd.randbytes(rnd.randrange(1, 200)))
    blob = b"".join(frames)
    cuts = sorted(rnd.sample(range(len(blob) + 1), min(len(blob) + 1, rnd.randrange(1, 6))))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)]) if blob[a:b]]
    why, ch, session = serve(chunks, upstream=sink)
    assert why and ch.closed and session.streams == {}
