"""The backhaul protocol: many TCP connections multiplexed over one exec's stdio.

Why: a Modal sandbox cannot dial this machine, so an agent's requests to granted
hosts cannot reach the grants forward proxy directly. fleet opens a long-lived
exec in the sandbox instead; a relay there (`backhaul_relay.RELAY`) listens on
127.0.0.1:PORT and carries each accepted connection over the exec's stdout
(sandbox -> here) and stdin (here -> sandbox); the local side
(`backhaul.Backhaul`) dials the forward proxy for each one and pipes bytes
both ways. No token crosses: the sandbox only sees the proxy's answers.

This module is the spec and the local codec. The relay implements the same
spec again, self-contained (it runs with a bare python3, no fleet inside).

## Spec, version 1

Byte stream of frames, both directions:

    type: u8 | stream id: u32 big-endian | length: u32 big-endian | payload[length]

`length` is at most MAX_PAYLOAD (65536). Types:

| type | name   | sid | payload              | direction |
| ---- | ------ | --- | -------------------- | --------- |
| 1    | HELLO  | 0   | MAGIC                | s -> l, first frame, exactly once |
| 2    | OPEN   | >0  | empty                | s -> l: a new connection; sids strictly increase |
| 3    | DATA   | >0  | 1..MAX_PAYLOAD bytes | both; counts against the receiver's window |
| 4    | WINDOW | >0  | u32 increment >= 1   | both; the receiver consumed that many bytes |
| 5    | FIN    | >0  | empty                | both; half-close: the sender sends no more DATA |
| 6    | RST    | >0  | reason, <= 1024 B    | both; abort the stream both ways |
| 7    | PING   | 0   | 8 bytes              | l -> s |
| 8    | PONG   | 0   | the PING's 8 bytes   | s -> l |

(s = the relay in the sandbox, l = the local side.)

- Flow control: each direction of each stream starts with INITIAL_WINDOW bytes
  of credit. A sender never sends more DATA than its credit; the receiver
  grants more (WINDOW) only after it has written the bytes to its socket, so
  memory per stream is bounded by the window whatever the speed of either end.
  A window above MAX_WINDOW is a violation.
- A stream ends when FIN went both ways, or on RST either way. Frames for a
  stream that has ended are ignored (they race with RST); frames for a sid
  never opened are violations.
- Keepalive: l sends PING every few seconds; s answers PONG. l drops a session
  that stays silent; s exits when l is silent for its idle limit, or when its
  stdin ends.
- Any violation (unknown type, bad sid, oversize or short payload, DATA beyond
  the window or after FIN, no HELLO first) ends the whole session on the local
  side: the sandbox side is untrusted. The local side then starts a new exec.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HELLO, OPEN, DATA, WINDOW, FIN, RST, PING, PONG = range(1, 9)
NAMES = {HELLO: "HELLO", OPEN: "OPEN", DATA: "DATA", WINDOW: "WINDOW", FIN: "FIN", RST: "RST", PING: "PING", PONG: "PONG"}
MAGIC = b"fleet-backhaul/1"
HEADER = struct.Struct(">BII")
MAX_PAYLOAD = 65536
INITIAL_WINDOW = 1024 * 1024
MAX_WINDOW = 1 << 30
MAX_REASON = 1024
MAX_SID = (1 << 32) - 1


class ProtocolError(Exception):
    """The peer broke the spec: the session ends."""


@dataclass(frozen=True)
class Frame:
    type: int
    sid: int
    payload: bytes = b""

    def __repr__(self) -> str:  # short, for test failures and logs
        return f"Frame({NAMES.get(self.type, self.type)}, {self.sid}, {len(self.payload)} B)"


def encode(type: int, sid: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(type, sid, len(payload)) + payload


def window(sid: int, increment: int) -> bytes:
    return encode(WINDOW, sid, struct.pack(">I", increment))


def check(frame: Frame) -> None:
    """Shape rules that hold for a frame wherever it comes from (not stream state)."""
    t, sid, n = frame.type, frame.sid, len(frame.payload)
    if t not in NAMES:
        raise ProtocolError(f"unknown frame type {t}")
    if t in (HELLO, PING, PONG):
        if sid != 0:
            raise ProtocolError(f"{NAMES[t]} on stream {sid}, not 0")
    elif sid == 0:
        raise ProtocolError(f"{NAMES[t]} on stream 0")
    if t in (OPEN, FIN) and n:
        raise ProtocolError(f"{NAMES[t]} with a {n}-byte payload")
    if t == DATA and n == 0:
        raise ProtocolError("empty DATA")
    if t == WINDOW and (n != 4 or struct.unpack(">I", frame.payload)[0] == 0):
        raise ProtocolError("WINDOW needs a 4-byte increment of at least 1")
    if t in (PING, PONG) and n != 8:
        raise ProtocolError(f"{NAMES[t]} needs 8 bytes, got {n}")
    if t == RST and n > MAX_REASON:
        raise ProtocolError(f"RST reason of {n} bytes")
    if t == HELLO and frame.payload != MAGIC:
        raise ProtocolError(f"HELLO {frame.payload[:40]!r} is not {MAGIC!r}")


def increment(frame: Frame) -> int:
    value: int = struct.unpack(">I", frame.payload)[0]
    return value


class Decoder:
    """Incremental: feed bytes, get whole, shape-checked frames. Memory stays
    under one header plus MAX_PAYLOAD whatever it is fed."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        while len(self._buf) >= HEADER.size:
            t, sid, n = HEADER.unpack_from(self._buf)
            if n > MAX_PAYLOAD:
                raise ProtocolError(f"frame of {n} bytes is over {MAX_PAYLOAD}")
            if t not in NAMES:
                raise ProtocolError(f"unknown frame type {t}")
            if len(self._buf) < HEADER.size + n:
                break
            frame = Frame(t, sid, bytes(self._buf[HEADER.size:HEADER.size + n]))
            del self._buf[:HEADER.size + n]
            check(frame)
            out.append(frame)
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
