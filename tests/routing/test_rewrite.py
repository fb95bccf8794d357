"""routing.rewrite: request and response heads as the routing proxy passes
them on (pure functions; the proxy tests check the same end to end)."""

from __future__ import annotations

from reconciler.net.http1 import parse_request_head, parse_response_head
from reconciler.routing.index import Target
from reconciler.routing.rewrite import (
    CLOSE_TAIL,
    END_TAIL,
    FAST_REQUEST,
    FAST_RESPONSE,
    request_head,
    response_head,
    switching_head,
)
from reconciler.routing.table import Route


def target(url: str = "http://127.0.0.1:3000", inner_port: int | None = None) -> Target:
    return Target.of("f", Route(agent="a", service="web", container_port=3000, target=url, inner_port=inner_port))


def lines(head: bytes) -> list[bytes]:
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")


def test_request_head_cuts_hop_by_hop_and_forged_headers_and_sets_forwarding():
    raw = (
        b"POST /x HTTP/1.1\r\nHost: web.a.localhost:8080\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil\r\nX-Fleet-Port: 22\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 3\r\nAccept: */*"
    )
    head = parse_request_head(raw)
    out = request_head(head, b"/x", b"web.a.localhost:8080", target(), False, b"127.0.0.2", b"http")
    assert lines(out) == [
        b"POST /x HTTP/1.1",
        b"Host: web.a.localhost:8080",
        b"Content-Length: 3",
        b"Accept: */*",
        b"X-Forwarded-For: 10.0.0.1, 127.0.0.2",
        b"X-Forwarded-Proto: http",
        b"X-Forwarded-Host: web.a.localhost:8080",
        b"Connection: keep-alive",
    ]


def test_request_head_never_drops_framing_named_in_connection():
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length, transfer-encoding, host\r\nTransfer-Encoding: chunked"
    out = request_head(parse_request_head(raw), b"/", b"h", target(), False, b"1.2.3.4", b"https")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in out and b"\r\nHost: h\r\n" in out


def test_request_head_for_an_https_target_and_a_port_router():
    raw = b"GET / HTTP/1.1\r\nhost: web.a.localhost"
    t = target("https://tunnel.example.test", inner_port=3000)
    out = request_head(parse_request_head(raw), b"/", b"web.a.localhost", t, False, b"1.2.3.4", b"https")
    assert b"\r\nHost: tunnel.example.test\r\n" in out and b"web.a.localhost\r\nX-Fleet-Port: 3000\r\n" in out


def test_request_head_for_an_upgrade():
    raw = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k"
    out = request_head(parse_request_head(raw), b"/ws", b"h", target(), True, b"1.2.3.4", b"http")
    assert out.endswith(b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    assert out.count(b"Upgrade: websocket") == 1 and b"Sec-WebSocket-Key: k" in out


def test_response_heads():
    head = parse_response_head(b"HTTP/1.0 200 OK\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: x\r\nContent-Length: 2")
    assert response_head(head, CLOSE_TAIL) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    assert response_head(head, END_TAIL) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    up = parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a")
    assert switching_head(up) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nConnection: Upgrade\r\n\r\n"
    )


def test_fast_patterns_take_only_the_common_case():
    assert FAST_REQUEST.fullmatch(b"GET /a?b HTTP/1.1\r\nHost: h") is not None
    assert FAST_REQUEST.fullmatch(b"POST /a HTTP/1.1\r\nHost: h") is None
    assert FAST_REQUEST.fullmatch(b"GET /a HTTP/1.0\r\nHost: h") is None
    assert FAST_REQUEST.fullmatch(b"GET /a HTTP/1.1\r\nHost : h") is None
    assert FAST_RESPONSE.fullmatch(b"HTTP/1.1 200 OK\r\nContent-Length: 1") is not None
    assert FAST_RESPONSE.fullmatch(b"HTTP/1.1 101 Switching\r\nUpgrade: x") is None
    assert FAST_RESPONSE.fullmatch(b"HTTP/1.1 200 OK\r\nBad\nLine: 1") is None
