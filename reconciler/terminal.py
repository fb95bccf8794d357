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
from typing import Callable, Iterator

DETACH_KEYS = "ctrl-p,ctrl-q"


def terminal_size() -> tuple[int, int]:
    """(rows, columns) of the local terminal, or a sane default."""
    try:
        cols, rows = os.get_terminal_size(sys.stdout.fileno())
        return rows, cols
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


def bridge(sock: socket.socket, resize: Callable[[int, int], None] | None = None, stdin_fd: int | None = None) -> None:
    """Copy stdin -> sock and sock -> stdout until the remote side closes."""
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
                        return
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
                    sock.sendall(data)
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGWINCH, old_handler)


def read_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """Demultiplex Docker's non-TTY stream: 8-byte headers (stream, size)."""
    buf = b""
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
