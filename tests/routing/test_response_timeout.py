"""The proxy's upstream response timeout and its handling of clients that stop
sending: a target that takes a request and never answers gets the client a 504
(its connection closed, the client's kept); a stream that has started is never
cut; a client that only half-closed still gets its answer, one that went away
releases its upstream connection."""

from __future__ import annotations

import socket
import time

import pytest

from reconciler.core.errors import FleetError
from reconciler.routing.proxy import ProxyConfig
from reconciler.routing.table import Route, set_fleet_routes

from .helpers import SilentTarget, connection, raw_connect, read_until, wait_until, ws_frame, ws_read_frame

# Longer than several sweeper rounds and than the short response timeouts below:
# "nothing happened meanwhile" waits, not timing assertions.
PAUSE = 1.0


def route(agent: str, target: str) -> Route:
    return Route(agent=agent, service="web", container_port=3000, target=target)


@pytest.fixture
def silent():
    t = SilentTarget()
    yield t
    t.stop()


def read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_silent_target_gets_504_naming_the_agent_and_the_client_keeps_its_connection(
    backends, start_proxy, port, tls, silent
):
    a = backends("A")
    set_fleet_routes("app", [port], [route("sleepy", silent.url), route("awake", a.url)])
    proxy = start_proxy(response_timeout=0.5)
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    for n, ctx in enumerate((None, tls), start=1):
        conn = connection("web.sleepy.localhost", port, ctx)
        try:
            for method, body in (("GET", None), ("POST", b"x" * 100_000)):
                conn.request(method, "/", body=body)
                resp = conn.getresponse()
                text = resp.read()
                assert resp.status == 504, (resp.status, text)
                assert b"agent sleepy" in text and b"fleet app" in text and b"within 0.5s" in text, text
                assert resp.getheader("Connection") is None  # the client's connection stays open ...
                conn.request("GET", "/next", headers={"Host": "web.awake.localhost"})
                resp = conn.getresponse()  # ... and serves the next request
                assert resp.status == 200 and b'"backend": "A"' in resp.read()
        finally:
            conn.close()
        # every connection that timed out was closed, none kept for reuse
        wait_until(lambda: silent.closed == silent.accepted == 2 * n, what="the proxy closing the silent connections")
    idle = proxy.call(lambda: [k for k, v in proxy.server.pool.idle.items() if v and k[2] != a.port])
    assert idle == []


def test_the_response_timeout_never_cuts_a_started_stream(backends, start_proxy, port, tls):
    a = backends("A")
    set_fleet_routes("app", [port], [route("dark-mode", a.url)])
    proxy = start_proxy(response_timeout=0.2)
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    host = "web.dark-mode.localhost"
    for ctx in (None, tls):
        a.gate.clear()
        with raw_connect(port, host, ctx) as s:  # SSE: silent for longer than the timeout between events
            s.sendall(f"GET /sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode())
            first = read_until(s, b"data: one")
            assert first.startswith(b"HTTP/1.1 200")
            time.sleep(PAUSE)
            a.gate.set()
            assert b"data: two" in read_until(s, b"0\r\n\r\n")
        with raw_connect(port, host, ctx) as s:  # WebSocket: idle for longer than the timeout after the 101
            s.sendall(
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = read_until(s, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            buf = bytearray(head.split(b"\r\n\r\n", 1)[1])

            def read(n: int) -> bytes:
                while len(buf) < n:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise EOFError
                    buf.extend(chunk)
                out = bytes(buf[:n])
                del buf[:n]
                return out

            time.sleep(PAUSE)
            s.sendall(ws_frame(b"still here"))
            assert ws_read_frame(read) == (1, b"A:still here")
    # a slow answer within the timeout's reach is a normal answer
    a.gate.clear()
    conn = connection(host, port)
    try:
        conn.request("GET", "/wait")
        a.gate.set()
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_a_half_closed_client_still_gets_its_answer(backends, start_proxy, port):
    """A client that sends a whole request and shuts down its write side (as
    `nc -N` does) still reads the answer: HTTP/1.1 clients after an interim 100
    (the probe that tells them from clients that went away), HTTP/1.0 as is."""
    a = backends("A")
    set_fleet_routes("app", [port], [route("dark-mode", a.url)])
    proxy = start_proxy(header_timeout=0.4)  # the sweeper looks every 0.1 s
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    for version in (b"1.1", b"1.0"):
        a.gate.clear()
        hits = a.hits
        with raw_connect(port) as s:
            s.sendall(b"GET /wait HTTP/" + version + b"\r\nHost: web.dark-mode.localhost\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            wait_until(lambda: a.hits == hits + 1, what="the request to reach the backend")
            time.sleep(PAUSE)  # several sweeps look at the half-closed client meanwhile
            a.gate.set()
            data = read_to_eof(s)
        if version == b"1.1":
            assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), data[:200]
        else:
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b"Connection: close" in data and b'"backend": "A"' in data


def test_a_client_that_goes_away_releases_its_upstream_connection(start_proxy, port, tls, silent):
    set_fleet_routes("app", [port], [route("sleepy", silent.url)])
    proxy = start_proxy(header_timeout=0.4)  # default response timeout (60 s): only the EOF can release
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    for n, ctx in enumerate((None, tls), start=1):
        with raw_connect(port, "web.sleepy.localhost", ctx) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: web.sleepy.localhost\r\n\r\n")
            wait_until(lambda: silent.accepted == n, what="the request to reach the target")
        wait_until(lambda: silent.closed == n, what="the proxy closing its connection to the target")
    assert proxy.call(lambda: (len(proxy.server.clients), len(proxy.server.probing))) == (0, 0)
    assert proxy.call(lambda: sum(len(v) for v in proxy.server.pool.idle.values())) == 0


def test_an_http10_client_that_goes_away_is_released_by_the_response_timeout(start_proxy, port, silent):
    """HTTP/1.0 clients get no 1xx probe: their EOF counts as a half-close, and
    the response timeout bounds how long the target is held."""
    set_fleet_routes("app", [port], [route("sleepy", silent.url)])
    proxy = start_proxy(header_timeout=0.4, response_timeout=0.5)
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    with raw_connect(port) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: web.sleepy.localhost\r\n\r\n")
        wait_until(lambda: silent.accepted == 1, what="the request to reach the target")
    wait_until(lambda: silent.closed == 1, what="the proxy closing its connection to the target")
    assert proxy.call(lambda: len(proxy.server.clients)) == 0


def test_response_timeout_from_the_environment(monkeypatch):
    assert ProxyConfig().response_timeout == 60.0
    monkeypatch.setenv("FLEET_PROXY_RESPONSE_TIMEOUT", "2.5")
    assert ProxyConfig.from_env().response_timeout == 2.5
    for bad in ("soon", "0", "-1", "inf", "nan"):
        monkeypatch.setenv("FLEET_PROXY_RESPONSE_TIMEOUT", bad)
        with pytest.raises(FleetError, match="FLEET_PROXY_RESPONSE_TIMEOUT must be a positive number"):
            ProxyConfig.from_env()
