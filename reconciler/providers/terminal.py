"""Bridging the user's terminal to an agent's terminal (attach, exec -it).

Works on a plain socket carrying raw terminal bytes (Docker's attach and exec
sockets with a TTY; a Modal exec stream adapted to a socket-like object), so no
program is needed inside the image. Puts the local terminal in raw mode, copies
bytes both ways, keeps the remote size in step with the local one, and restores
the terminal whatever happens.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

DETACH_KEYS = "ctrl-p,ctrl-q"


class AttachEnd(NamedTuple):
    """How an attach ended: the user detached (the agent left running), or the
    agent's side ended, with the agent's exit code when the provider knows it."""

    detached: bool
    exit_code: int | None = None

_CTRL_PUNCT = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


def parse_detach_keys(keys: str) -> bytes:
    """Docker's notation to bytes: "ctrl-p,ctrl-q" -> b"\\x10\\x11". Each key is
    ctrl-<a-z>, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or one plain
    character; anything else is a FleetError naming the key."""
    from reconciler.core.errors import FleetError

    if not keys.strip():
        raise FleetError("--detach-keys: empty; give keys like ctrl-p,ctrl-q")
    out = b""
    for key in keys.split(","):
        k = key.strip().lower()
        if k.startswith("ctrl-") and len(k) == 6 and "a" <= k[5] <= "z":
            out += bytes([ord(k[5]) - ord("a") + 1])
        elif k.startswith("ctrl-") and k[5:] in _CTRL_PUNCT:
            out += bytes([_CTRL_PUNCT[k[5:]]])
        elif len(key.strip()) == 1 and key.strip().isprintable():
            out += key.strip().encode()
        else:
            raise FleetError(
                f"--detach-keys: cannot read {key.strip()!r}; use comma-separated keys, each ctrl-<a-z>, "
                "ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or one character (default ctrl-p,ctrl-q)"
            )
    return out


class DetachScanner:
    """Finds the detach sequence in what the user types, across reads: `feed`
    returns the bytes to pass on (a possible start of the sequence is held
    back) and whether the sequence was typed (what follows it is dropped)."""

    def __init__(self, sequence: bytes):
        self.sequence = sequence
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.sequence:
            return data, False
        data = self.held + data
        self.held = b""
        if self.sequence in data:
            return data[: data.index(self.sequence)], True
        keep = next((n for n in range(len(self.sequence) - 1, 0, -1) if data.endswith(self.sequence[:n])), 0)
        if keep:
            self.held, data = data[-keep:], data[:-keep]
        return data, False


def terminal_size() -> tuple[int, int]:
    """(rows, columns) of the local terminal, or a sane default."""
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        if rows and cols:  # a terminal whose size was never set says 0x0
            return rows, cols
        return 24, 80
    except OSError:
        return 24, 80


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def bridge(sock: socket.socket, resize: Callable[[int, int], None] | None = None, stdin_fd: int | None = None,
           detach: bytes = b"") -> bool:
    """Copy stdin -> sock and sock -> stdout until the remote side closes, or
    the user types the `detach` sequence (then True: the remote side is left
    as it is)."""
    scanner = DetachScanner(detach)
    in_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    out_fd = sys.stdout.fileno()
    old_handler = None
    if resize is not None:
        def on_winch(signum, frame):  # noqa: ARG001
            try:
                resize(*terminal_size())
            except Exception:
                pass

        try:
            resize(*terminal_size())
            old_handler = signal.signal(signal.SIGWINCH, on_winch)
        except (ValueError, Exception):  # not in the main thread, or the remote refused
            old_handler = None
    stdin_open = True
    try:
        with raw_terminal(in_fd):
            while True:
                watch = [sock] + ([in_fd] if stdin_open else [])
                try:
                    readable, _, _ = select.select(watch, [], [])
                except InterruptedError:
                    continue
                if sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return False
                    os.write(out_fd, data)
                if stdin_open and in_fd in readable:
                    data = os.read(in_fd, 65536)
                    if not data:
                        stdin_open = False
                        try:
                            sock.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    data, detached = scanner.feed(data)
                    if data:
                        sock.sendall(data)
                    if detached:
                        return True
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)


def read_frames(sock: socket.socket, buf: bytes = b"") -> Iterator[tuple[int, bytes]]:
    """Demultiplex Docker's non-TTY stream: 8-byte headers (stream, size); `buf`:
    the stream's first bytes, already read."""
    while True:
        while len(buf) < 8:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        stream, size = struct.unpack(">BxxxL", buf[:8])
        buf = buf[8:]
        while len(buf) < size:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        yield stream, buf[:size]
        buf = buf[size:]
