"""The routing proxy under abuse, as a hostile container would try it: the real
background proxy process, real sockets. Floods are bounded in count and time.

Sources other than 127.0.0.1 are simulated by binding the client socket to
another loopback address (127.0.0.2 ...), which the proxy sees as the peer.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time

import pytest

from reconciler.routing import daemon
from reconciler.routing.table import Route, set_fleet_routes
from tests.routing.conftest import backends, ca, port, tls  # noqa: F401  (fixtures)
from tests.routing.helpers import free_port, get_json, wait_until

ATTACKER = "127.0.0.2"


@pytest.fixture
def proxy(fleet_home, monkeypatch):
    """Start the real background proxy with the given environment; stops it after."""

    def start(**env: str) -> int:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return daemon.start()["pid"]

    yield start
    if daemon.running_pid() is not None:
        daemon.stop()


def _route(agent: str, target: str) -> Route:
    return Route(agent=agent, service="web", container_port=3000, target=target)


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def connect_from(source: str, port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def closed_by_peer(s: socket.socket, wait: float = 0.0) -> bool:
    """True when the proxy has closed `s` (EOF or reset) within `wait` seconds."""
    s.settimeout(wait if wait > 0 else 0.001)
    try:
        return s.recv(1) == b""
    except (socket.timeout, BlockingIOError):
        return False
    except ConnectionResetError:
        return True


# -- per-source cap on connections without a complete request head --------------------------


def test_one_source_cannot_hold_more_than_its_cap_of_silent_connections(proxy, backends, port):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    proxy(FLEET_PROXY_MAX_PENDING_PER_SOURCE="20")
    flood: list[socket.socket] = []
    try:
        for _ in range(80):
            flood.append(connect_from(ATTACKER, port))
        time.sleep(0.5)
        closed = [s for s in flood if closed_by_peer(s, 0.05)]
        # The first 20 are held (they may still send a head); every later one is closed.
        assert len(closed) >= 55, f"only {len(closed)} of 80 silent connections were closed"
        # Another source is unaffected, during the flood: plain and TLS.
        assert get_json("x.localhost", port)["backend"] == "A"
        # A held connection that sends its head is served and frees its place.
        held = [s for s in flood if s not in closed]
        held[0].settimeout(5)
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: x.localhost\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for s in flood:
            s.close()
    # Once the flood is gone the attacker's address may connect again.
    def served() -> bool:
        s = connect_from(ATTACKER, port)
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x.localhost\r\nConnection: close\r\n\r\n")
            return s.recv(65536).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            s.close()

    wait_until(served, what="the attacker's address served again")
    assert "FLEET_PROXY_MAX_PENDING_PER_SOURCE" in (daemon.log_path()).read_text()


def test_one_source_cannot_hold_more_than_its_cap_of_connections(proxy, backends, port):
    """Connections that each sent one request and then sit idle (keep-alive) are
    trusted, but one source may still hold only so many of them."""
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    proxy(FLEET_PROXY_MAX_CONNECTIONS_PER_SOURCE="30")
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(60):
            s = connect_from(ATTACKER, port)
            held.append(s)
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n")
                reply = s.recv(65536)
            except ConnectionResetError:
                reply = b""
            if not reply:
                refused += 1
            else:
                assert reply.startswith(b"HTTP/1.1 404")
        assert refused == 30, refused
        assert get_json("x.localhost", port)["backend"] == "A"  # another source is served
    finally:
        for s in held:
            s.close()


@pytest.mark.slow
def test_flood_of_1000_silent_connections_leaves_routes_answering(proxy, backends, port, tls):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    proxy()  # the default cap
    flood: list[socket.socket] = []
    answered = 0
    try:
        for i in range(1000):
            with contextlib.suppress(OSError):
                flood.append(connect_from(ATTACKER, port))
            if i % 100 == 99:
                assert get_json("x.localhost", port)["backend"] == "A"
                assert get_json("x.localhost", port, tls=tls)["backend"] == "A"
                answered += 2
        time.sleep(0.5)
        closed = sum(closed_by_peer(s, 0.01) for s in flood)
        assert closed >= len(flood) - 256
        assert answered == 20
    finally:
        for s in flood:
            s.close()


# -- request bodies -------------------------------------------------------------------------


def test_stalled_or_trickled_request_body_is_closed_but_steady_upload_goes_on(proxy, backends, port):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    proxy(FLEET_PROXY_BODY_TIMEOUT="1", FLEET_PROXY_BODY_MIN_BYTES="1024")
    head = b"POST /upload HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 1000000\r\n\r\n"
    stall = socket.create_connection(("127.0.0.1", port), 10)
    trickle = socket.create_connection(("127.0.0.1", port), 10)
    chunked = socket.create_connection(("127.0.0.1", port), 10)
    steady = socket.create_connection(("127.0.0.1", port), 10)
    try:
        stall.sendall(head + b"x" * 100)
        trickle.sendall(head)
        chunked.sendall(b"POST / HTTP/1.1\r\nHost: x.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        total = 40 * 2048
        steady.sendall(head.replace(b"1000000", str(total).encode()))
        deadline = time.monotonic() + 4.5  # more than four body windows
        sent = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                trickle.send(b"y" * 24)  # slowhttptest -B: a few bytes now and then
            if sent < total:
                steady.sendall(b"z" * 2048)  # 2 KiB every 0.1 s: slow, but steady
                sent += 2048
            time.sleep(0.1)
        for s in (stall, trickle, chunked):
            s.settimeout(3)
            data = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := s.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
        while sent < total:
            steady.sendall(b"z" * 2048)
            sent += 2048
        steady.settimeout(10)
        reply = steady.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"length": %d' % total in reply
    finally:
        for s in (stall, trickle, chunked, steady):
            s.close()


# -- descriptors ----------------------------------------------------------------------------


def _nofile(pid: int) -> tuple[int, int]:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            f = line.split()
            return int(f[3]), int(f[4])
    raise AssertionError("no limits")


def test_descriptor_limit_is_raised_and_running_out_pauses_accepting(proxy, backends, port):
    a = backends("A")
    port2 = free_port()
    set_fleet_routes("app", [port], [_route("x", a.url)])
    set_fleet_routes("other", [port2], [_route("y", a.url)])
    pid = proxy(FLEET_PROXY_MAX_PENDING_PER_SOURCE="100000")
    soft, hard = _nofile(pid)
    assert soft == hard, "the proxy keeps a soft descriptor limit below its hard limit"
    daemon.stop()
    pid = proxy(FLEET_PROXY_MAX_PENDING_PER_SOURCE="100000", FLEET_PROXY_NOFILE="128")
    assert _nofile(pid)[0] == 128
    flood: list[socket.socket] = []
    try:
        for _ in range(300):  # far past 128: the proxy runs out of descriptors
            try:
                flood.append(connect_from(ATTACKER, port, timeout=1))
            except OSError:
                break
        time.sleep(1.0)
        assert daemon.running_pid() == pid, "the proxy died when it ran out of descriptors"
    finally:
        for s in flood:
            s.close()
    # The flood is gone: both listeners answer again, the same process.
    wait_until(lambda: _answers("x.localhost", port), what="port 1 answering after the flood")
    wait_until(lambda: _answers("y.localhost", port2), what="port 2 answering after the flood")
    assert daemon.running_pid() == pid
    assert "pausing accepts" in daemon.log_path().read_text()


def _answers(host: str, port: int) -> bool:
    try:
        return get_json(host, port)["backend"] == "A"
    except (OSError, AssertionError):
        return False


# -- memory ---------------------------------------------------------------------------------


def _tls_storm(port: int, n: int, tls: ssl.SSLContext, pid: int) -> tuple[float, float, float]:
    before = rss_mb(pid)
    conns = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), 10)
            conns.append(tls.wrap_socket(s, server_hostname="x.localhost"))
        time.sleep(0.5)
        peak = rss_mb(pid)
    finally:
        for s in conns:
            s.close()
    time.sleep(1.0)
    wait_until(lambda: _answers("x.localhost", port), what="proxy answering")
    time.sleep(2.0)  # the proxy's sweeper notices the drop and trims
    return before, peak, rss_mb(pid)


def _warm(port: int, tls: ssl.SSLContext) -> None:
    for _ in range(20):
        get_json("x.localhost", port, tls=tls)
        get_json("x.localhost", port)


def test_memory_is_returned_after_a_tls_storm(proxy, backends, port, tls):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    pid = proxy(FLEET_PROXY_MAX_PENDING_PER_SOURCE="100000")
    _warm(port, tls)
    before, peak, after = _tls_storm(port, 300, tls, pid)
    print(f"TLS storm 300: RSS before {before:.1f} MB, peak {peak:.1f} MB, after {after:.1f} MB")
    assert after - before < 25, (before, peak, after)


@pytest.mark.slow
def test_memory_is_returned_after_1000_idle_tls_connections(proxy, backends, port, tls):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    pid = proxy(FLEET_PROXY_MAX_PENDING_PER_SOURCE="100000")
    _warm(port, tls)
    before, peak, after = _tls_storm(port, 1000, tls, pid)
    print(f"TLS storm 1000: RSS before {before:.1f} MB, peak {peak:.1f} MB, after {after:.1f} MB")
    assert after - before < 60, (before, peak, after)
    # and a second storm does not ratchet it up
    _, peak2, after2 = _tls_storm(port, 1000, tls, pid)
    print(f"second storm: peak {peak2:.1f} MB, after {after2:.1f} MB")
    assert after2 - before < 60


# -- the log --------------------------------------------------------------------------------


def _bad_requests(port: int, host: str, n: int) -> None:
    """n requests that each make the proxy log a line (a route whose target is down: 502),
    pipelined on a few keep-alive connections."""
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    per_conn = 100
    for start in range(0, n, per_conn):
        k = min(per_conn, n - start)
        s = connect_from(ATTACKER, port, timeout=10)
        try:
            s.sendall(req * k)
            seen = 0
            data = b""
            while seen < k:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
                seen = data.count(b"HTTP/1.1 502")
            assert seen == k, (seen, k, data[-300:])
        finally:
            s.close()


def test_3000_bad_requests_add_at_most_a_few_kb_to_the_log(proxy, port):
    down = f"http://127.0.0.1:{free_port()}"
    set_fleet_routes("app", [port], [_route("gone", down)])
    proxy(FLEET_PROXY_LOG_WINDOW="3")
    log = daemon.log_path()
    wait_until(lambda: "route table loaded" in log.read_text(), what="proxy log")
    before = log.stat().st_size
    t0 = time.monotonic()
    _bad_requests(port, "gone.localhost", 3000)
    took = time.monotonic() - t0
    time.sleep(0.3)
    grown = log.stat().st_size - before
    print(f"3000 bad requests in {took:.1f}s: proxy.log grew by {grown} bytes")
    assert grown < 8 * 1024, grown

    # every line is accounted for: written, or counted in a summary once its window ends
    def accounted() -> bool:
        text = log.read_text()
        written = text.count("502 gone.localhost")
        summarised = sum(int(n) for n in re.findall(r"suppressed (\d+) similar lines in the last", text))
        return written + summarised == 3000

    wait_until(accounted, what="a summary of the suppressed lines")


def test_proxy_log_is_rotated_by_size_while_running(proxy, port):
    down = f"http://127.0.0.1:{free_port()}"
    set_fleet_routes("app", [port], [_route("gone", down)])
    pid = proxy(FLEET_PROXY_LOG_MAX_BYTES="20000", FLEET_PROXY_LOG_BURST="1000000")
    log = daemon.log_path()
    _bad_requests(port, "gone.localhost", 1000)  # about 100 KB of lines
    time.sleep(0.3)
    assert daemon.running_pid() == pid
    rotated = log.with_name("proxy.log.1")
    assert rotated.exists(), "proxy.log was not rotated while the proxy ran"
    assert log.stat().st_size <= 21000 and rotated.stat().st_size <= 21000
    assert not log.with_name("proxy.log.3").exists()
    # the running proxy still writes to the current file
    mark = log.stat().st_size
    _bad_requests(port, "gone.localhost", 5)
    wait_until(lambda: log.stat().st_size != mark or log.with_name("proxy.log.1").stat().st_size != 0, what="log written")


@pytest.mark.slow
def test_500_slow_body_connections_are_all_closed_and_routes_answer(proxy, backends, port):
    """slowhttptest -B at scale: 500 connections send a head with a large
    Content-Length, then 8 bytes now and then. All are answered 408 and closed
    within a few body windows, while another client is served throughout."""
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    proxy(FLEET_PROXY_BODY_TIMEOUT="2")
    head = b"POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 10000000\r\n\r\n"
    conns: list[socket.socket] = []
    try:
        for i in range(500):
            s = connect_from(f"127.0.0.{3 + i % 4}", port)
            s.sendall(head)
            conns.append(s)
        deadline = time.monotonic() + 12
        open_ = set(conns)
        while open_ and time.monotonic() < deadline:
            for s in list(open_):
                try:
                    s.send(b"01234567")
                except OSError:
                    open_.discard(s)
            assert get_json("x.localhost", port)["backend"] == "A"
            time.sleep(0.5)
        still = [s for s in conns if not closed_by_peer(s, 0.01) and s in open_]
        assert not still, f"{len(still)} of 500 trickling connections are still open"
    finally:
        for s in conns:
            s.close()
