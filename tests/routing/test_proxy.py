"""The proxy end to end: real backends on 127.0.0.1, real HTTP and TLS through it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess

import pytest

from reconciler.net.ca import CertificateAuthority
from reconciler.routing.table import Listen, Route, add_listen, remove_fleet, set_fleet_routes

from .helpers import (
    WAIT,
    connection,
    free_port,
    get_json,
    raw_connect,
    read_until,
    request,
    wait_until,
    ws_accept,
    ws_frame,
    ws_read_frame,
)


def route(agent: str, target: str, service: str = "web", cport: int = 3000) -> Route:
    return Route(agent=agent, service=service, container_port=cport, target=target)


@pytest.fixture
def two_agents(backends, start_proxy, port):
    """Agents dark-mode and checkout, both serving container port 3000."""
    a = backends("A")
    b = backends("B")
    set_fleet_routes("app", [port], [route("dark-mode", a.url), route("checkout", b.url)])
    proxy = start_proxy()
    wait_until(lambda: port in proxy.listening_ports(), what="listener")
    return proxy, a, b


def test_two_agents_same_port_by_hostname_http_and_https(two_agents, port, tls):
    for ctx in (None, tls):
        assert get_json("web.dark-mode.localhost", port, tls=ctx)["backend"] == "A"
        assert get_json("web.checkout.localhost", port, tls=ctx)["backend"] == "B"
        # one port: the agent answers at <agent>.localhost too; names are case-insensitive
        assert get_json("dark-mode.localhost", port, tls=ctx)["backend"] == "A"
        assert get_json("WEB.Checkout.LOCALHOST", port, tls=ctx)["backend"] == "B"


def test_forwarded_headers_and_original_host(two_agents, port, tls):
    seen = get_json("web.dark-mode.localhost", port, "/p?q=1", tls=tls, headers={"X-Forwarded-For": "10.0.0.9"})
    h = seen["headers"]
    assert seen["path"] == "/p?q=1"
    assert h["host"] == f"web.dark-mode.localhost:{port}"
    assert h["x-forwarded-host"] == f"web.dark-mode.localhost:{port}"
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
    assert get_json("web.dark-mode.localhost", port)["headers"]["x-forwarded-proto"] == "http"


@pytest.mark.skipif(not shutil.which("curl"), reason="curl not installed")
def test_curl_with_cacert(two_agents, port, ca):
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca.cert_path),
         "--resolve", f"web.checkout.localhost:{port}:127.0.0.1", f"https://web.checkout.localhost:{port}/hello"],
        capture_output=True, text=True, timeout=WAIT * 2,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["backend"] == "B"


def test_index_html_and_json(two_agents, port, tls):
    status, headers, body = request("localhost", port, headers={"Accept": "text/html"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f"https://web.dark-mode.localhost:{port}/".replace("https", "http") in body.decode()
    data = get_json("localhost", port, tls=tls, headers={"Accept": "application/json"})
    assert data["port"] == port
    got = {(x["fleet"], x["agent"], x["service"]): x for x in data["routes"]}
    assert set(got) == {("app", "checkout", "web"), ("app", "dark-mode", "web")}
    assert got[("app", "checkout", "web")]["url"] == f"https://web.checkout.localhost:{port}/"
    assert got[("app", "checkout", "web")]["hostnames"] == ["web.checkout.localhost", "checkout.localhost"]


def test_unknown_agent_or_service_is_404_listing_routes(two_agents, port):
    a = two_agents[1]
    before = a.hits
    status, _, body = request("web.nobody.localhost", port)
    assert status == 404
    text = body.decode()
    assert "no route for web.nobody.localhost" in text
    assert f"http://web.dark-mode.localhost:{port}/" in text and f"http://web.checkout.localhost:{port}/" in text
    status, _, body = request("api.dark-mode.localhost", port)
    assert status == 404 and "agent dark-mode serves web" in body.decode()
    status, _, body = request("x.localhost", port, headers={"Accept": "application/json"})
    assert status == 404 and len(json.loads(body)["routes"]) == 2
    assert a.hits == before


def test_foreign_host_is_refused_never_forwarded(two_agents, port, tls):
    _, a, b = two_agents
    before = a.hits + b.hits
    for host in ("example.com", "web.dark-mode.localhost.evil.com", "10.1.2.3"):
        status, _, body = request(host, port)
        assert status == 421, host
        assert b"only localhost names" in body
    # over TLS with the SNI of another site: the CA cannot certify it
    with pytest.raises(ssl.SSLCertVerificationError):
        request("example.com", port, tls=tls)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    assert request("example.com", port, tls=insecure)[0] == 421
    assert a.hits + b.hits == before


def test_target_not_answering_is_502_naming_the_agent(backends, start_proxy, port):
    dead = free_port()
    set_fleet_routes("app", [port], [route("sleepy", f"http://127.0.0.1:{dead}")])
    start_proxy()
    status, _, body = wait_until(lambda: (r := request("web.sleepy.localhost", port))[0] != 404 and r, what="route")
    assert status == 502
    assert b"agent sleepy" in body and b"fleet app" in body and b"connection refused" in body


def test_keepalive_two_hosts_on_one_connection(two_agents, port, tls):
    for ctx in (None, tls):
        conn = connection("web.dark-mode.localhost", port, ctx)
        try:
            seen = []
            for host in ("web.dark-mode.localhost", "web.checkout.localhost", "dark-mode.localhost", "nope.localhost"):
                conn.request("GET", "/", headers={"Host": host})
                resp = conn.getresponse()
                body = resp.read()
                seen.append(json.loads(body)["backend"] if resp.status == 200 else resp.status)
                sock = conn.sock
                assert sock is not None
            assert seen == ["A", "B", "A", 404]
            # still the first socket: every request went over one connection
            conn.request("GET", "/", headers={"Host": "web.checkout.localhost"})
            assert json.loads(conn.getresponse().read())["backend"] == "B"
            assert conn.sock is sock
        finally:
            conn.close()


def test_pipelined_requests(two_agents, port):
    with raw_connect(port) as s:
        s.sendall(
            b"GET /1 HTTP/1.1\r\nHost: web.dark-mode.localhost\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: web.checkout.localhost\r\n\r\n"
            b"GET /3 HTTP/1.1\r\nHost: nope.localhost\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2 and data.count(b"HTTP/1.1 404") == 1
    assert data.index(b'"backend": "A"') < data.index(b'"backend": "B"') < data.index(b"HTTP/1.1 404")


def test_chunked_and_large_uploads(two_agents, port, tls):
    payload = os.urandom(700_000)
    pieces = [payload[i : i + 65_000] for i in range(0, len(payload), 65_000)]
    for ctx in (None, tls):
        conn = connection("web.checkout.localhost", port, ctx)
        try:
            conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True,
                         headers={"Transfer-Encoding": "chunked"})
            got = json.loads(conn.getresponse().read())
            assert got == {"backend": "B", "length": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "chunked": True}
            big = os.urandom(2_500_000)
            conn.request("POST", "/echo", body=big)  # Content-Length, on the same connection
            got = json.loads(conn.getresponse().read())
            assert got["length"] == len(big) and got["sha256"] == hashlib.sha256(big).hexdigest()
        finally:
            conn.close()


def test_large_download_and_head(two_agents, port, tls):
    status, headers, body = request("web.dark-mode.localhost", port, "/big", tls=tls)
    assert status == 200 and len(body) == 3 * 1024 * 1024
    assert body == (bytes(range(256)) * 4096 * 3)[: len(body)]
    conn = connection("web.dark-mode.localhost", port)
    try:
        conn.request("HEAD", "/")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and int(resp.getheader("Content-Length")) > 0
        conn.request("GET", "/")  # the connection survives a body-less response
        assert json.loads(conn.getresponse().read())["backend"] == "A"
    finally:
        conn.close()


def test_sse_stream_arrives_incrementally(two_agents, port, tls):
    _, a, _ = two_agents
    for ctx in (None, tls):
        a.gate.clear()
        with raw_connect(port, "web.dark-mode.localhost", ctx) as s:
            s.sendall(b"GET /sse HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nAccept: text/event-stream\r\n\r\n")
            first = read_until(s, b"data: one")
            assert b"text/event-stream" in first
            assert b"data: two" not in first
            a.gate.set()  # only now does the backend send the second event
            rest = read_until(s, b"0\r\n\r\n")
            assert b"data: two" in rest


def test_websocket_echo(two_agents, port, tls):
    for ctx, agent, name in ((None, "dark-mode", "A"), (tls, "checkout", "B")):
        host = f"web.{agent}.localhost"
        with raw_connect(port, host, ctx) as s:
            key = "dGhlIHNhbXBsZSBub25jZQ=="
            s.sendall(
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
                + ws_frame(b"early")  # a frame right behind the handshake must not be lost
            )
            head = read_until(s, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101")
            assert f"Sec-WebSocket-Accept: {ws_accept(key)}".encode() in head
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

            assert ws_read_frame(read) == (1, f"{name}:early".encode())
            s.sendall(ws_frame(b"hello"))
            assert ws_read_frame(read) == (1, f"{name}:hello".encode())
            s.sendall(ws_frame(b"x" * 70_000, opcode=2))
            assert ws_read_frame(read) == (2, f"{name}:".encode() + b"x" * 70_000)
            s.sendall(ws_frame(b"\x03\xe8", opcode=8))
            assert ws_read_frame(read)[0] == 8


def test_route_changes_are_picked_up_without_restart(two_agents, backends, port):
    proxy, a, b = two_agents
    c = backends("C")
    conn = connection("web.dark-mode.localhost", port)
    try:
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read())["backend"] == "A"
        # dark-mode replaced: new target; checkout destroyed
        set_fleet_routes("app", [port], [route("dark-mode", c.url)])

        def current() -> str:
            conn.request("GET", "/")
            return json.loads(conn.getresponse().read())["backend"]

        wait_until(lambda: current() == "C", what="new target")
    finally:
        conn.close()
    assert request("web.checkout.localhost", port)[0] == 404
    assert proxy.thread.is_alive()


def test_listeners_follow_the_table(two_agents, backends, port, tls):
    proxy, a, _ = two_agents
    other = free_port()
    set_fleet_routes("second", [other], [route("solo", a.url, "api", 8000)])
    wait_until(lambda: other in proxy.listening_ports(), what="new listener")
    assert get_json("solo.localhost", other, tls=tls)["backend"] == "A"
    assert request("solo.localhost", port)[0] == 404  # each fleet's names on its own port
    extra = free_port()
    add_listen(extra)
    wait_until(lambda: extra in proxy.listening_ports(), what="extra listener")
    assert get_json("web.checkout.localhost", extra)["backend"] == "B"  # an extra port serves every fleet
    remove_fleet("second")
    wait_until(lambda: other not in proxy.listening_ports(), what="listener closed")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", other), 2).close()


def test_port_taken_is_reported_naming_the_process(backends, start_proxy):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = taken.getsockname()[1]
    try:
        set_fleet_routes("app", [busy], [route("a", "http://127.0.0.1:1")])
        proxy = start_proxy()
        errors = proxy.call(lambda: dict(proxy.server.errors))
        msg = errors[("127.0.0.1", busy)]
        assert f"port {busy} on 127.0.0.1 is already in use by " in msg and f"(pid {os.getpid()})" in msg
    finally:
        taken.close()
    # freed: the proxy takes it on its next retry
    wait_until(lambda: busy in proxy.listening_ports(), what="port retried")


def test_slow_loris_is_closed_while_others_are_served(start_proxy, backends, tls):
    # its own backend, not `two_agents`: that fixture's proxy (30 s header timeout)
    # would also watch the table and could take this port first
    a = backends("A")
    port = free_port()
    set_fleet_routes("loris", [port], [route("fast", a.url)])
    start_proxy(header_timeout=1.0)
    wait_until(lambda: request("fast.localhost", port)[0] == 200, what="route")
    slow = raw_connect(port)
    silent = raw_connect(port)  # never sends a byte
    slow_tls = socket.create_connection(("127.0.0.1", port), WAIT)  # TLS handshake never finished
    try:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: fast.localhost\r\nX-Slow: ")
        slow_tls.sendall(b"\x16\x03\x01")
        for _ in range(3):
            slow.sendall(b"a")  # dribbling bytes does not extend the deadline
            assert get_json("fast.localhost", port, tls=tls)["backend"] == "A"
        for s in (slow, silent, slow_tls):
            s.settimeout(WAIT)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            assert data == b"" or data.startswith(b"HTTP/1.1 408")
    finally:
        for s in (slow, silent, slow_tls):
            s.close()
    assert get_json("fast.localhost", port)["backend"] == "A"


def test_oversized_and_malformed_heads(two_agents, port):
    with raw_connect(port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nX-Big: " + b"a" * (70 * 1024))
        assert read_until(s, b"\r\n").startswith(b"HTTP/1.1 431")
    for bad in (
        b"GET / HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: web.dark-mode.localhost\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        with raw_connect(port) as s:
            s.sendall(bad)
            assert read_until(s, b"\r\n").startswith(b"HTTP/1.1 400"), bad
    # the proxy still serves
    assert get_json("web.dark-mode.localhost", port)["backend"] == "A"


def test_backend_restart_on_same_port_reuses_nothing_stale(backends, start_proxy, port):
    first = backends("first")
    bport = first.port
    set_fleet_routes("app", [port], [route("a", first.url)])
    start_proxy()
    conn = connection("a.localhost", port)
    try:
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read())["backend"] == "first"
        first.stop()  # the proxy's pooled upstream connection is now dead
        backends("second", port=bport)
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read())["backend"] == "second"
    finally:
        conn.close()


def test_https_target_is_verified(backends, start_proxy, port, tmp_path):
    """Targets may be https tunnels (Modal): forwarded over verified TLS, Host set to the target."""
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca", "upstream", permitted_names=None)
    server_ctx = upstream_ca.leaf_context("127.0.0.1")
    secure = backends("tunnel", tls=server_ctx)
    target = f"https://127.0.0.1:{secure.port}"
    set_fleet_routes("app", [port], [route("remote", target)])
    start_proxy(upstream_ca=str(upstream_ca.cert_path))
    seen = wait_until(lambda: get_json("web.remote.localhost", port), what="route")
    assert seen["backend"] == "tunnel"  # type: ignore[index]
    assert seen["headers"]["host"] == f"127.0.0.1:{secure.port}"  # type: ignore[index]
    assert seen["headers"]["x-forwarded-host"] == f"web.remote.localhost:{port}"  # type: ignore[index]


def test_https_target_with_untrusted_cert_is_502(backends, start_proxy, port, tmp_path):
    rogue = CertificateAuthority(tmp_path / "rogue-ca", "rogue", permitted_names=None)
    secure = backends("tunnel", tls=rogue.leaf_context("127.0.0.1"))
    set_fleet_routes("app", [port], [route("remote", f"https://127.0.0.1:{secure.port}")])
    start_proxy()
    status, _, body = wait_until(lambda: (r := request("remote.localhost", port))[0] != 404 and r, what="route")
    assert status == 502 and b"TLS verification failed" in body


def test_listen_default_is_used_when_nothing_asks(backends, start_proxy):
    p = free_port()
    proxy = start_proxy(default_listen=Listen(port=p))
    wait_until(lambda: p in proxy.listening_ports(), what="default listener")
    assert request("localhost", p)[0] == 200


def test_http10_clients_and_until_close_responses(two_agents, port):
    with raw_connect(port) as s:  # HTTP/1.0 without keep-alive: one answer, then closed
        s.sendall(b"GET / HTTP/1.0\r\nHost: web.dark-mode.localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and b'"backend": "A"' in data
    with raw_connect(port) as s:  # close wins over keep-alive (RFC 9112 9.3): one answer, then closed
        s.sendall(b"GET / HTTP/1.0\r\nHost: web.dark-mode.localhost\r\nConnection: keep-alive, close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in data.split(b"\r\n\r\n")[0]
    with raw_connect(port) as s:  # HTTP/1.0 with keep-alive: two answers on one connection
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.0\r\nHost: web.checkout.localhost\r\nConnection: keep-alive\r\n\r\n")
            head = read_until(s, b"\r\n\r\n")
            assert b"Connection: keep-alive" in head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += s.recv(65536)
            assert b'"backend": "B"' in body
    # a response without a length ends with its connection: the client is told so
    conn = connection("web.dark-mode.localhost", port)
    try:
        conn.request("GET", "/close")
        resp = conn.getresponse()
        assert resp.getheader("Connection") == "close"
        assert resp.read() == b"until-close " * 1000
    finally:
        conn.close()


def test_expect_100_continue(two_agents, port):
    body = b"x" * 5000
    with raw_connect(port) as s:
        s.sendall(
            b"POST /echo HTTP/1.1\r\nHost: web.checkout.localhost\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.1 100")
        s.sendall(body)
        data = read_until(s, b"}")
        assert b"HTTP/1.1 200" in data and b'"length": 5000' in data


def test_fuzzed_request_heads_never_break_the_proxy(two_agents, port, caplog):
    """Mutated request heads get an answer or a close, never a crash; the proxy serves on."""
    import random

    rng = random.Random(4)
    base = [
        b"GET / HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nAccept: */*\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: web.checkout.localhost\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /echo HTTP/1.1\r\nHost: web.checkout.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: web.dark-mode.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ]
    junk = [b"\r", b"\n", b"\x00", b" ", b":", b"\t", b"\xff", b"chunked", b"Content-Length: 9", b"Host: x.localhost", b"-1", b"\r\n\r\n"]
    for _ in range(150):
        msg = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            pos = rng.randrange(len(msg))
            if op < 0.4:
                msg[pos:pos] = rng.choice(junk)
            elif op < 0.7:
                del msg[pos : pos + rng.randint(1, 6)]
            else:
                msg[pos] = rng.randrange(256)
        with raw_connect(port) as s:
            s.settimeout(WAIT)
            try:
                s.sendall(bytes(msg))
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass  # closed on us: fine
    assert get_json("web.dark-mode.localhost", port)["backend"] == "A"
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL") and "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
