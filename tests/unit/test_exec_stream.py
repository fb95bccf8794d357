"""`fleet exec` on a busy machine: a command that ends quickly can write its output
before the client has read the response headers of the hijacked connection. The HTTP
reader that parses the headers then buffers that output too, and the raw socket never
returns it (seen under `make test -n 4`: `fleet exec impl-agent "git status"` printed
nothing, exit 0). `early_bytes` hands those bytes to the stream reader first."""

from __future__ import annotations

import http.client
import socket
import struct
from types import SimpleNamespace

from reconciler.providers.docker.session import early_bytes, raw_socket
from reconciler.providers.terminal import read_frames

HEAD = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def hijacked(*sends: bytes):
    """What docker-py's exec_start(socket=True) hands back, on a socket pair whose
    other end (the engine) has sent `sends` and closed."""
    ours, engine = socket.socketpair()
    for data in sends:
        engine.sendall(data)
    engine.close()
    response = http.client.HTTPResponse(ours)
    response.begin()  # docker-py reads the headers before handing the socket over
    sock = response.fp.raw  # as docker-py's _get_raw_response_socket for a unix socket
    sock._response = SimpleNamespace(raw=SimpleNamespace(_fp=response))
    return sock


def test_output_that_came_with_the_headers_is_not_lost():
    sock = hijacked(HEAD + frame(1, b"On branch main\n") + frame(2, b"warning\n"))
    first = early_bytes(sock)
    assert list(read_frames(raw_socket(sock), first)) == [(1, b"On branch main\n"), (2, b"warning\n")]


def test_without_it_the_raw_socket_returns_nothing():
    sock = hijacked(HEAD + frame(1, b"On branch main\n"))
    assert list(read_frames(raw_socket(sock))) == []  # the bug early_bytes fixes


def test_output_after_the_headers_still_streams_and_nothing_is_read_twice():
    sock = hijacked(HEAD + frame(1, b"a"), frame(1, b"b") + frame(1, b"c"))
    first = early_bytes(sock)
    assert b"".join(d for _, d in read_frames(raw_socket(sock), first)) == b"abc"


def test_a_socket_docker_py_did_not_wrap_has_no_early_bytes():
    a, b = socket.socketpair()
    try:
        assert early_bytes(a) == b""
    finally:
        a.close()
        b.close()
