"""The local side of the backhaul: connections made inside a Modal sandbox to
127.0.0.1:PORT arrive here, over one long-lived exec, and are dialled on to a
local address (the grants forward proxy). Spec: `backhaul_proto`; the sandbox
side: `backhaul_relay`.

- `Session` serves one exec: it demultiplexes the relay's frames, dials
  `upstream` for each OPEN and pipes bytes both ways within the windows, so a
  slow upstream or a slow sandbox holds memory to a window per stream. The
  sandbox is untrusted: any violation, or silence, ends the session.
- `Backhaul` keeps a session up: it starts the exec through an injected
  `Opener`, and starts it again (with exponential backoff) when the exec ends,
  the stream drops or the sandbox goes. Cancel `run()` to stop it.
- `modal_opener(sandbox)` is the Opener for a real `modal.Sandbox` (the SDK's
  `.aio` API, used by duck typing: nothing here imports modal).

The channel carries bytes only: the token is added by the forward proxy on this
machine, never sent into the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.providers.modal import backhaul_proto as p
from reconciler.providers.modal.backhaul_relay import IDLE, relay_argv


class ExecChannel(Protocol):
    """One exec's stdio, as the local side sees it."""

    async def read(self) -> bytes:
        """The next bytes the exec wrote to stdout; b"" once it ended."""

    async def write(self, data: bytes) -> None:
        """Deliver `data` to the exec's stdin; returns when it was sent."""

    async def close(self) -> None:
        """End the exec (best effort; closing its stdin makes the relay exit)."""


Opener = Callable[[list[str]], Awaitable[ExecChannel]]


@dataclass(frozen=True)
class Limits:
    max_streams: int = 64  # concurrent connections per session (more get RST): held bytes <= 64 windows
    ping_interval: float = 5.0
    dead_after: float = 20.0  # silence (no frame) after which a session is dropped
    hello_timeout: float = 60.0  # from exec start to the relay listening
    connect_timeout: float = 10.0  # dialling upstream
    max_batch: int = 1 << 20  # bytes per write to the exec's stdin


class _Stream:
    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.credit = p.INITIAL_WINDOW  # DATA we may still send to the sandbox
        self.allowed = p.INITIAL_WINDOW  # DATA the sandbox may still send us
        self.more = asyncio.Event()
        self.more.set()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()  # b"" = FIN, None = RST
        self.writer: asyncio.StreamWriter | None = None
        self.sent_fin = self.got_fin = self.eof_written = self.dead = False
        self.task: asyncio.Task[None] | None = None


class Session:
    """One exec's worth of multiplexed connections. `run()` returns why it ended."""

    def __init__(self, channel: ExecChannel, upstream: tuple[str, int], limits: Limits = Limits(),
                 on_hello: Callable[[], None] | None = None, source: str | None = None) -> None:
        self.channel = channel
        self.upstream = upstream
        self.source = source
        self.limits = limits
        self.on_hello = on_hello
        self.streams: dict[int, _Stream] = {}
        self.max_sid = 0
        self.hello = False
        self.opened = 0  # streams accepted over the session's life
        self.last_heard = time.monotonic()
        self._out: deque[bytes] = deque()
        self._out_ready = asyncio.Event()
        self._decoder = p.Decoder()

    # ---- the session ------------------------------------------------------------------

    async def run(self) -> str:
        tasks = [asyncio.ensure_future(c) for c in (self._read_loop(), self._write_loop(), self._watchdog())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            task = next(iter(done))
            if task.cancelled():
                return "cancelled"
            error = task.exception()
            if isinstance(error, p.ProtocolError):
                return f"protocol error from the sandbox: {error}"
            if error is not None:
                return f"exec stream failed: {type(error).__name__}: {error}"
            return str(task.result())
        finally:
            for t in tasks:
                t.cancel()
            pending = [st.task for st in self.streams.values() if st.task is not None]
            for st in list(self.streams.values()):
                self._drop(st)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.channel.close(), 5)
            for t in [*tasks, *pending]:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, 5)

    async def _read_loop(self) -> str:
        while True:
            data = await self.channel.read()
            if not data:
                return "the exec ended"
            self.last_heard = time.monotonic()
            for frame in self._decoder.feed(data):
                self._handle(frame)

    async def _write_loop(self) -> None:
        while True:
            await self._out_ready.wait()
            batch: list[bytes] = []
            size = 0
            while self._out and size < self.limits.max_batch:
                chunk = self._out.popleft()
                batch.append(chunk)
                size += len(chunk)
            if not self._out:
                self._out_ready.clear()
            if batch:
                await self.channel.write(b"".join(batch))

    async def _watchdog(self) -> str:
        started = time.monotonic()
        n = 0
        while True:
            await asyncio.sleep(min(self.limits.ping_interval, 1.0))
            now = time.monotonic()
            if not self.hello:
                if now - started > self.limits.hello_timeout:
                    return "the relay did not start"
                continue
            if now - self.last_heard > self.limits.dead_after:
                return f"the relay was silent for {self.limits.dead_after:g} s"
            if now - self.last_heard >= self.limits.ping_interval:
                n += 1
                self._send(p.encode(p.PING, 0, n.to_bytes(8, "big")))

    def _send(self, data: bytes) -> None:
        self._out.append(data)
        self._out_ready.set()

    # ---- frames from the sandbox ------------------------------------------------------

    def _handle(self, f: p.Frame) -> None:
        if not self.hello:
            if f.type != p.HELLO:
                raise p.ProtocolError(f"{f!r} before HELLO")
            self.hello = True
            if self.on_hello:
                self.on_hello()
            return
        if f.type in (p.HELLO, p.PING):
            raise p.ProtocolError(f"unexpected {f!r}")
        if f.type == p.PONG:
            return
        if f.type == p.OPEN:
            if f.sid <= self.max_sid:
                raise p.ProtocolError(f"OPEN {f.sid} after {self.max_sid}")
            self.max_sid = f.sid
            if len(self.streams) >= self.limits.max_streams:
                self._send(p.encode(p.RST, f.sid, b"too many connections"))
                return
            new = _Stream(f.sid)
            self.streams[f.sid] = new
            self.opened += 1
            new.task = asyncio.ensure_future(self._serve(new))
            return
        st = self.streams.get(f.sid)
        if st is None:
            if f.sid > self.max_sid:
                raise p.ProtocolError(f"{f!r} for a stream never opened")
            return  # the stream ended here; the frame crossed our RST
        if f.type == p.DATA:
            if st.got_fin:
                raise p.ProtocolError(f"DATA after FIN on {f.sid}")
            if len(f.payload) > st.allowed:
                raise p.ProtocolError(f"DATA beyond the window on {f.sid}")
            st.allowed -= len(f.payload)
            st.inbox.put_nowait(f.payload)
        elif f.type == p.WINDOW:
            st.credit += p.increment(f)
            if st.credit > p.MAX_WINDOW:
                raise p.ProtocolError(f"window over {p.MAX_WINDOW} on {f.sid}")
            st.more.set()
        elif f.type == p.FIN:
            if st.got_fin:
                raise p.ProtocolError(f"second FIN on {f.sid}")
            st.got_fin = True
            st.inbox.put_nowait(b"")
        elif f.type == p.RST:
            self._drop(st)

    # ---- one connection ---------------------------------------------------------------

    async def _serve(self, st: _Stream) -> None:
        try:
            dial = asyncio.open_connection(*self.upstream, local_addr=(self.source, 0) if self.source else None)
            reader, writer = await asyncio.wait_for(dial, self.limits.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            self._reset(st, f"cannot reach the upstream: {e}")
            return
        if st.dead:
            writer.close()
            return
        st.writer = writer
        down = asyncio.ensure_future(self._down(st, writer))
        try:
            await self._up(st, reader)
            await down
        finally:
            down.cancel()

    async def _up(self, st: _Stream, reader: asyncio.StreamReader) -> None:
        """upstream -> DATA frames, within the credit the sandbox granted."""
        try:
            while not st.dead:
                await st.more.wait()
                if st.dead:
                    return
                data = await reader.read(min(st.credit, p.MAX_PAYLOAD))
                if st.dead:
                    return
                if not data:
                    st.sent_fin = True
                    self._send(p.encode(p.FIN, st.sid))
                    self._forget(st)
                    return
                st.credit -= len(data)
                if st.credit <= 0:
                    st.more.clear()
                self._send(p.encode(p.DATA, st.sid, data))
        except (ConnectionError, OSError) as e:
            self._reset(st, f"upstream connection failed: {e}")

    async def _down(self, st: _Stream, writer: asyncio.StreamWriter) -> None:
        """DATA from the sandbox -> upstream; the credit goes back once written."""
        owed = 0
        broken = False
        while True:
            data = await st.inbox.get()
            if data is None:
                return
            if data == b"":
                if not broken:
                    with contextlib.suppress(ConnectionError, OSError):
                        if writer.can_write_eof():
                            writer.write_eof()
                st.eof_written = True
                self._forget(st)
                return
            if not broken:
                try:
                    writer.write(data)
                    await writer.drain()
                except (ConnectionError, OSError) as e:
                    if not st.sent_fin:
                        self._reset(st, f"upstream connection failed: {e}")
                        return
                    broken = True  # upstream stopped reading after it finished: drop the rest, like TCP
            owed += len(data)
            if owed >= p.INITIAL_WINDOW // 4 or st.inbox.empty():
                st.allowed += owed
                self._send(p.window(st.sid, owed))
                owed = 0

    def _forget(self, st: _Stream) -> None:
        if st.sent_fin and st.eof_written and self.streams.get(st.sid) is st:
            del self.streams[st.sid]
            if st.writer is not None:
                st.writer.close()

    def _reset(self, st: _Stream, reason: str) -> None:
        if not st.dead:
            self._drop(st)
            self._send(p.encode(p.RST, st.sid, reason.encode("utf-8", "replace")[:p.MAX_REASON]))

    def _drop(self, st: _Stream) -> None:
        """End a stream here at once (RST from the sandbox, or the session ending)."""
        if st.dead:
            return
        st.dead = True
        st.more.set()
        st.inbox.put_nowait(None)
        self.streams.pop(st.sid, None)
        if st.writer is not None:
            st.writer.transport.abort()
        if st.task is not None and st.writer is None:
            st.task.cancel()  # still dialling


class Backhaul:
    """Keeps a relay exec running in a sandbox and serves it.

    `run()` starts the exec (`opener(relay_argv(...))`), serves the session and,
    when it ends (exec exited, stream dropped, sandbox gone, protocol error),
    starts it again after a backoff: `backoff[0]` seconds doubling up to
    `backoff[1]`, back to the start after a session that stayed up `healthy`
    seconds. `up` is set while a relay listens. Cancel `run()` to stop.

    `source`: the local address upstream connections are made from (any
    127.0.0.0/8 address on Linux), so the upstream can tell one sandbox's
    connections from another's: the grants proxy binds a credential to the
    address its caller connects from. `give_up(error)`: when true for an error
    starting the exec (the sandbox is gone: modal's NotFoundError), `run()`
    returns instead of retrying.
    """

    def __init__(self, opener: Opener, upstream: tuple[str, int], port: int, *,
                 pidfile: str | None = None, idle: float = IDLE, limits: Limits = Limits(),
                 backoff: tuple[float, float] = (0.5, 30.0), healthy: float = 30.0,
                 source: str | None = None, give_up: Callable[[Exception], bool] | None = None) -> None:
        self.opener = opener
        self.give_up = give_up
        self.upstream = upstream
        self.source = source
        self.port = port
        self.argv = relay_argv(port, pidfile or f"/tmp/fleet-backhaul-{port}.pid", idle)
        self.limits = limits
        self.backoff = backoff
        self.healthy = healthy
        self.up = asyncio.Event()
        self.starts = 0  # execs started
        self.ended: list[str] = []  # why each session ended (the last 20)
        self.session: Session | None = None

    @property
    def last_error(self) -> str | None:
        return self.ended[-1] if self.ended else None

    async def run(self) -> None:
        delay = self.backoff[0]
        while True:
            started = time.monotonic()
            try:
                channel = await self.opener(list(self.argv))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the sandbox is gone, the SDK failed: retry later
                self._ended(f"cannot start the relay: {type(e).__name__}: {e}")
                if self.give_up is not None and self.give_up(e):
                    return
            else:
                self.starts += 1
                self.session = Session(channel, self.upstream, self.limits, on_hello=self.up.set, source=self.source)
                try:
                    self._ended(await self.session.run())
                finally:
                    self.up.clear()
                    self.session = None
            if time.monotonic() - started >= self.healthy:
                delay = self.backoff[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    def _ended(self, why: str) -> None:
        self.ended = [*self.ended[-19:], why]


# ---- the modal SDK ---------------------------------------------------------------------


class ModalExec:
    """ExecChannel over a `modal` ContainerProcess started with `text=False`."""

    def __init__(self, proc: Any) -> None:
        self.proc = proc
        self._chunks = proc.stdout.__aiter__()

    async def read(self) -> bytes:
        while True:
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return b""
            if chunk:
                return bytes(chunk)

    async def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        await self.proc.stdin.drain.aio()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write_eof()
            await self.proc.stdin.drain.aio()


def modal_opener(sandbox: Any, **exec_kwargs: Any) -> Opener:
    """An Opener that runs the relay with `sandbox.exec` (extra keyword
    arguments, such as `stderr=StreamType.DEVNULL`, go to exec)."""

    async def open_exec(argv: list[str]) -> ExecChannel:
        proc = await sandbox.exec.aio(*argv, text=False, **exec_kwargs)
        return ModalExec(proc)

    return open_exec


def subprocess_opener(python: str = "python3") -> Opener:
    """An Opener that runs the relay as a local subprocess (tests, benchmarks):
    the same script, the same pipes, no sandbox."""

    async def open_exec(argv: list[str]) -> ExecChannel:
        proc = await asyncio.create_subprocess_exec(
            python if argv[0] == "python3" else argv[0], *argv[1:],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        return _SubprocessExec(proc)

    return open_exec


class _SubprocessExec:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> bytes:
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(1 << 16)

    async def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 2)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


__all__ = ["Backhaul", "ExecChannel", "Limits", "ModalExec", "Opener", "Session", "modal_opener", "subprocess_opener"]
