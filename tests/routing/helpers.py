"""Real backends, a proxy running in a thread, and clients that speak to it by
hostname over 127.0.0.1 (HTTP and HTTPS with the CA trusted explicitly)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from reconciler.net.ca import CertificateAuthority, routing_ca
from tests.conftest import free_port, wait_for  # noqa: F401  (free_port re-exported)
from reconciler.routing.proxy import ProxyConfig, ProxyServer

WAIT = 10.0  # every bounded wait in these tests


wait_until = functools.partial(wait_for, timeout=WAIT, interval=0.05)


# -- backends ------------------------------------------------------------------------------


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def ws_frame(payload: bytes, opcode: int = 1, mask: bool = True) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_read_frame(read: Callable[[int], bytes]) -> tuple[int, bytes]:
    b0, b1 = read(2)
    opcode = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read(8))[0]
    key = read(4) if b1 & 0x80 else None
    data = read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return opcode, data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Backend"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, data: dict, status: int = 200) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> tuple[bytes, bool]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out), True
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n), False

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self.server.hits += 1
        path = self.path.split("?")[0]
        if path == "/sse":
            return self._sse()
        if path == "/ws":
            return self._ws()
        if path == "/wait":  # answers once the test opens the gate
            self.server.gate.wait(WAIT)
        if path == "/close":  # no length: the body ends when the connection does
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"until-close " * 1000)
            self.wfile.flush()
            return
        if path == "/big":
            n = 3 * 1024 * 1024
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 4096
            sent = 0
            while sent < n:
                self.wfile.write(block[: n - sent])
                sent += len(block[: n - sent])
            return
        self._json(
            {
                "backend": self.server.name,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }
        )

    def do_POST(self) -> None:
        self.server.hits += 1
        body, chunked = self._read_body()
        self._json(
            {
                "backend": self.server.name,
                "length": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "chunked": chunked,
            }
        )

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        chunk(b"data: one\n\n")
        # The second event waits until the client has seen the first: a proxy
        # that buffered the stream would never let the test see "one".
        self.server.gate.wait(WAIT)
        chunk(b"data: two\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _ws(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws_accept(key))
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

        def read(n: int) -> bytes:
            data = self.rfile.read(n)
            if len(data) < n:
                raise EOFError
            return data

        try:
            while True:
                opcode, data = ws_read_frame(read)
                if opcode == 8:
                    self.wfile.write(ws_frame(data, 8, mask=False))
                    self.wfile.flush()
                    return
                self.wfile.write(ws_frame(f"{self.server.name}:".encode() + data, opcode, mask=False))
                self.wfile.flush()
        except (EOFError, OSError):
            return


class Backend(ThreadingHTTPServer):
    """An HTTP/1.1 server on 127.0.0.1 that says who it is."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str, port: int = 0, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", port), _Handler)
        self.name = name
        self.hits = 0
        self.gate = threading.Event()
        self.conns: list[socket.socket] = []
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def get_request(self):
        conn, addr = super().get_request()
        self.conns.append(conn)
        return conn, addr

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.gate.set()
        self.shutdown()
        self.server_close()
        for c in self.conns:  # like a dying process: every connection goes too
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(WAIT)


class SilentTarget:
    """Accepts connections and reads requests, never answers; counts the
    connections the other side (the proxy) has closed."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.accepted = 0
        self.closed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(WAIT * 3)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        finally:
            conn.close()
            with self._lock:
                self.closed += 1

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()


# -- the proxy in a thread -----------------------------------------------------------------


class ProxyThread:
    """A real ProxyServer on its own event loop in a background thread."""

    def __init__(self, config: ProxyConfig | None = None, ca: CertificateAuthority | None = None):
        self.config = config or ProxyConfig(reload_interval=0.05, default_listen=None)
        self.ca = ca or routing_ca()
        self.loop = asyncio.new_event_loop()
        self.server = ProxyServer(self.config, self.ca)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def start(self) -> "ProxyThread":
        self.thread.start()
        assert self._ready.wait(WAIT), "proxy did not start"
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(WAIT)

    def call(self, fn: Callable[[], object]) -> object:
        """Run `fn` on the proxy's loop and return its result."""
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn), self.loop)
        return fut.result(WAIT)

    def listening_ports(self) -> set[int]:
        return self.call(lambda: {x.port for x in self.server.listening()})  # type: ignore[return-value]


async def _as_coro(fn: Callable[[], object]) -> object:
    return fn()


# -- clients --------------------------------------------------------------------------------


def client_ssl(ca: CertificateAuthority) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    return ctx


class HostConnection(http.client.HTTPConnection):
    """HTTP to 127.0.0.1:port whatever the host name (which goes in Host)."""

    def connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class HostTLSConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port, with SNI and certificate check for the host name."""

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


def connection(host: str, port: int, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    if tls is not None:
        return HostTLSConnection(host, port, context=tls, timeout=WAIT)
    return HostConnection(host, port, timeout=WAIT)


def request(
    host: str,
    port: int,
    path: str = "/",
    method: str = "GET",
    body: bytes | None = None,
    headers: dict | None = None,
    tls: ssl.SSLContext | None = None,
) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, headers lower-cased, body)."""
    conn = connection(host, port, tls)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def get_json(host: str, port: int, path: str = "/", tls: ssl.SSLContext | None = None, headers: dict | None = None) -> dict:
    status, _, data = request(host, port, path, headers=headers, tls=tls)
    assert status == 200, (status, data[:300])
    return json.loads(data)


def raw_connect(port: int, host: str | None = None, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), WAIT)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname=host)
    return sock


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data[-200:]!r}")
        data += chunk
        assert len(data) < limit
    return data
