"""Process I/O through Docker's hijacked HTTP streams, buffered so clients can read by offset.

A Modal exec (or a sandbox's entrypoint) is a real process in a real container. Its
stdin/stdout/stderr travel over Docker's `exec/…/start` or `containers/…/attach`
endpoints, which upgrade the HTTP connection to a raw, multiplexed byte stream. The
fake speaks that upgrade itself with asyncio (instead of docker-py's
`exec_start(socket=True)`, whose buffered HTTP reader can swallow the first output
bytes when they arrive together with the response head), demultiplexes the frames
into per-stream buffers, and writes stdin with offset bookkeeping like the router's.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from urllib.parse import urlparse

# Keep at most this much of each output stream (long-lived agents write for hours;
# a reader that falls further behind skips ahead, as the SDK does for sandbox stdio).
DEFAULT_RETAIN = 256 * 1024 * 1024
READ_CHUNK = 64 * 1024


class DockerEndpoint:
    """Where the Docker engine listens, for raw (hijacked) connections."""

    def __init__(self, api_version: str) -> None:
        self.api_version = api_version
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        u = urlparse(host)
        if u.scheme == "unix":
            self.unix_path: str | None = u.path
            self.tcp: tuple[str, int] | None = None
        elif u.scheme in ("tcp", "http"):
            self.unix_path = None
            self.tcp = (u.hostname or "127.0.0.1", u.port or 2375)
        else:
            raise RuntimeError(f"fake Modal: unsupported DOCKER_HOST {host!r} (unix:// or tcp:// only)")

    async def hijack(self, path: str, body: dict | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """POST `path` with `Upgrade: tcp` and return the raw stream after the response head."""
        if self.unix_path is not None:
            reader, writer = await asyncio.open_unix_connection(self.unix_path, limit=2**20)
        else:
            assert self.tcp is not None
            reader, writer = await asyncio.open_connection(*self.tcp, limit=2**20)
        payload = json.dumps(body or {}).encode()
        head = (
            f"POST /v{self.api_version}{path} HTTP/1.1\r\n"
            "Host: docker\r\n"
            "Content-Type: application/json\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: tcp\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        writer.write(head + payload)
        await writer.drain()
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        status_line = response.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] not in ("101", "200"):
            detail = b""
            try:
                detail = await asyncio.wait_for(reader.read(4096), timeout=2)
            except asyncio.TimeoutError:
                pass
            writer.close()
            raise RuntimeError(f"docker {path}: {status_line} {detail.decode(errors='replace').strip()}")
        return reader, writer


class OutputBuffer:
    """An append-only byte stream with readers that follow it from any offset.

    Only the last `retain` bytes are kept; a reader behind that skips ahead.
    Lives on one event loop; not thread-safe.
    """

    def __init__(self, discard: bool = False, retain: int = DEFAULT_RETAIN) -> None:
        self._data = bytearray()
        self._base = 0
        self._closed = False
        self._discard = discard
        self._retain = retain
        self._changed = asyncio.Event()

    @property
    def end(self) -> int:
        return self._base + len(self._data)

    @property
    def closed(self) -> bool:
        return self._closed

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def append(self, data: bytes) -> None:
        if self._discard or not data:
            return
        self._data += data
        excess = len(self._data) - self._retain
        if excess > 0:
            del self._data[:excess]
            self._base += excess
        self._wake()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake()

    async def follow(self, offset: int = 0) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (starting offset, non-empty chunk) until the stream is closed and drained."""
        while True:
            if offset < self._base:
                offset = self._base
            if offset < self.end:
                start = offset - self._base
                chunk = bytes(self._data[start : start + READ_CHUNK])
                yield offset, chunk
                offset += len(chunk)
                continue
            if self._closed:
                return
            await self._changed.wait()


class Process:
    """One process attached through a hijacked Docker stream.

    `docker_exec_id` is Docker's exec id (None for a container's main process). The exit
    code arrives from outside (Docker events, or an inspect fallback) via `set_exit`.
    """

    def __init__(self, docker_exec_id: str | None, tty: bool, discard_stdout: bool = False,
                 discard_stderr: bool = False) -> None:
        self.docker_exec_id = docker_exec_id
        self.tty = tty
        self.stdout = OutputBuffer(discard=discard_stdout)
        self.stderr = OutputBuffer(discard=discard_stderr)
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self.output_done = asyncio.Event()
        self.stdin_written = 0
        self.stdin_closed = False
        self._stdin_lock = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

    def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._pump = asyncio.get_running_loop().create_task(self._run_pump(reader))

    async def _run_pump(self, reader: asyncio.StreamReader) -> None:
        try:
            if self.tty:
                while data := await reader.read(READ_CHUNK):
                    self.stdout.append(data)
            else:
                while True:
                    header = await reader.readexactly(8)
                    size = int.from_bytes(header[4:8], "big")
                    data = await reader.readexactly(size) if size else b""
                    (self.stderr if header[0] == 2 else self.stdout).append(data)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.stdout.close()
            self.stderr.close()
            self.output_done.set()

    def set_exit(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
            self.exited.set()

    async def write_stdin(self, offset: int, data: bytes, eof: bool) -> None:
        """Write `data` meant to start at byte `offset`; bytes already written are skipped
        (retries are idempotent). A gap raises ValueError."""
        async with self._stdin_lock:
            if offset > self.stdin_written:
                raise ValueError(f"stdin offset {offset} is past the {self.stdin_written} bytes written")
            data = data[self.stdin_written - offset :]
            if self.stdin_closed:
                return
            w = self._writer
            if w is None or w.is_closing():
                self.stdin_closed = True
                return
            try:
                if data:
                    w.write(data)
                    await w.drain()
                    self.stdin_written += len(data)
                if eof:
                    self.stdin_closed = True
                    if w.can_write_eof():
                        w.write_eof()
            except (ConnectionError, OSError):
                self.stdin_closed = True

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            try:
                await asyncio.wait_for(self._pump, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._pump.cancel()
