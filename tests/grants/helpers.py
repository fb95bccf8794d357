"""Helpers for the grants tests: a fake HTTPS upstream with its own CA that
echoes what it received, and the forward proxy running in a thread."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from reconciler.grants.forward import ForwardConfig, ForwardProxy
from reconciler.grants.peers import Peers
from reconciler.net.ca import CertificateAuthority
from tests.conftest import free_port  # noqa: F401  (re-exported for the grants tests)

# One ref, advertised the way a git smart-HTTP server does (protocol v0).
_SHA = "1" * 40


def _pkt(line: bytes) -> bytes:
    return b"%04x" % (len(line) + 4) + line


def git_advertisement() -> bytes:
    return (
        _pkt(b"# service=git-upload-pack\n") + b"0000"
        + _pkt(f"{_SHA} HEAD\0multi_ack symref=HEAD:refs/heads/main agent=git/fake\n".encode())
        + _pkt(f"{_SHA} refs/heads/main\n".encode()) + b"0000"
    )


class Upstream:
    """An HTTPS (or plain HTTP) server on 127.0.0.1 recording every request.

    `GET /echo...` answers with JSON of the request (method, path, headers,
    body length); `GET /<x>/<y>.git/info/refs?service=git-upload-pack` answers
    like a git server; bodies may be chunked."""

    def __init__(self, ca_dir: Path | None, names=("api.github.com", "github.com"), tls: bool = True, host: str = "127.0.0.1"):
        self.requests: list[dict] = []
        self.ca = CertificateAuthority(ca_dir, "test upstream CA").ensure() if tls else None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self):
                body = self._body()
                seen = {
                    "method": self.command, "path": self.path,
                    "headers": [[k, v] for k, v in self.headers.items()], "body_len": len(body),
                }
                outer.requests.append(seen)
                if "/info/refs" in self.path:
                    data = git_advertisement()
                    ctype = "application/x-git-upload-pack-advertisement"
                else:
                    data = json.dumps(seen).encode()
                    ctype = "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went first (attack tests close early): nothing to answer

            do_GET = do_POST = do_PUT = _handle
            do_TRACE = do_TRACK = do_trace = _handle  # echoes the request, as a TRACE-reflecting server would

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        if self.ca is not None:
            ctx = self.ca.server_context(names[0])
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def ca_file(self) -> str:
        assert self.ca is not None
        return str(self.ca.cert_path)

    def headers_of(self, i: int = -1) -> dict[str, str]:
        return {k.lower(): v for k, v in self.requests[i]["headers"]}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def host_peers(addresses: dict[str, set[str]]) -> Peers:
    """Peers for a proxy tested from this machine: container id -> the
    addresses its connections come from (no engine involved)."""
    return Peers(lambda cid: set(addresses.get(cid, set())))


class ProxyThread:
    """The forward proxy on its own event loop in a thread."""

    def __init__(self, config: ForwardConfig, peers: Peers | None = None):
        self.proxy = ForwardProxy(config, peers=peers)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> "ProxyThread":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(10)
        return self

    def wait_listening(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proxy.address is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"forward proxy not listening: {self.proxy.error}")
            time.sleep(0.02)
        return self.proxy.address[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def client_context(*cafiles: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafiles[0])
    for f in cafiles[1:]:
        ctx.load_verify_locations(cafile=f)
    return ctx
