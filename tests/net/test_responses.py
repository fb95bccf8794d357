"""net.responses: reason phrases, local responses (checked by h11, an
independent parser), and hop-by-hop header rewriting."""

from __future__ import annotations

import h11
import pytest

from reconciler.net.responses import (
    HOP_BY_HOP,
    REASONS,
    connection_named,
    drop_headers,
    dropper,
    header_dropper,
    keeps_alive,
    local_response,
    reason,
    rewrite_head,
)


def parse_response(data: bytes) -> tuple[h11.Response, bytes, bool]:
    """(response, body, whether h11 says the connection must close) of `data`."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    resp = conn.next_event()
    assert isinstance(resp, h11.Response)
    body = b""
    while True:
        ev = conn.next_event()
        if isinstance(ev, h11.Data):
            body += ev.data
        else:
            assert isinstance(ev, h11.EndOfMessage)
            break
    return resp, body, conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE


def test_reasons_cover_what_both_proxies_answer():
    wanted = {
        200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        407: "Proxy Authentication Required", 408: "Request Timeout", 421: "Misdirected Request",
        431: "Request Header Fields Too Large", 501: "Not Implemented", 502: "Bad Gateway", 504: "Gateway Timeout",
    }
    for status, phrase in wanted.items():
        assert REASONS[status] == phrase
        assert reason(status) == phrase
    assert reason(599) == "Error"


def test_local_response_is_exact_and_well_formed():
    data = local_response(
        404, "no such agent\n", headers=[("Cache-Control", "no-store"), ("Server", "fleet-proxy")]
    )
    assert data == (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n"
        b"Cache-Control: no-store\r\nServer: fleet-proxy\r\n\r\nno such agent\n"
    )
    resp, body, closes = parse_response(data)
    assert resp.status_code == 404 and resp.reason == b"Not Found"
    assert body == b"no such agent\n"
    assert not closes


def test_local_response_close_bytes_body_and_content_type():
    body = "é".encode() * 3
    data = local_response(502, body, close=True, content_type="text/html; charset=utf-8", headers=[("X-Fleet-Proxy", "grants")])
    resp, got, closes = parse_response(data)
    assert got == body
    assert closes
    headers = dict(resp.headers)
    assert headers[b"content-type"] == b"text/html; charset=utf-8"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert data.index(b"X-Fleet-Proxy") < data.index(b"Connection: close")  # caller's headers, then Connection


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Evil", "a\r\nSet-Cookie: x=1")],
        [("X-Evil", "a\nb")],
        [("Bad Name", "v")],
        [("X:Colon", "v")],
        [("X-Nul", "a\x00b")],
    ],
)
def test_local_response_refuses_a_head_split(headers):
    with pytest.raises(ValueError):
        local_response(400, "x", headers=headers)


def test_local_response_refuses_a_content_type_split():
    with pytest.raises(ValueError):
        local_response(200, "x", content_type="text/plain\r\nX-Injected: 1")


def test_connection_named_never_drops_framing_host_or_close():
    tokens = {b"close", b"keep-alive", b"x-secret", b"content-length", b"transfer-encoding", b"host", b"upgrade", b"te"}
    assert connection_named(frozenset(tokens)) == {b"x-secret"}
    assert connection_named(frozenset({b"keep-alive"})) == frozenset()
    # with a smaller `already`, what is not dropped anyway is named
    assert connection_named(frozenset({b"te", b"x-a"}), already=frozenset()) == {b"te", b"x-a"}


def test_header_dropper_cuts_whole_lines_case_insensitively_and_only_those_names():
    block = b"\r\nHost: a\r\nTE: trailers\r\nTex: keep\r\nte-x: keep\r\nX-Te: keep\r\nCONNECTION: close\r\nAccept: */*"
    out = header_dropper({b"te", b"connection"}).sub(b"", block)
    assert out == b"\r\nHost: a\r\nTex: keep\r\nte-x: keep\r\nX-Te: keep\r\nAccept: */*"
    assert HOP_BY_HOP >= {b"connection", b"te", b"upgrade", b"transfer-encoding", b"proxy-authorization"}


def test_dropper_is_cached_and_drop_headers_keeps_an_empty_set_alone():
    names = frozenset({b"x-a"})
    assert dropper(names) is dropper(frozenset({b"x-a"}))
    block = b"\r\nX-A: 1\r\nX-B: 2"
    assert drop_headers(block, names) == b"\r\nX-B: 2"
    assert drop_headers(block, frozenset()) is block


def test_rewrite_head_drops_adds_and_replaces_the_first_line():
    raw = b"GET http://h/x HTTP/1.1\r\nHost: h\r\nProxy-Authorization: Basic abc\r\nProxy-Connection: keep-alive\r\nAccept: */*"
    out = rewrite_head(raw, {b"proxy-authorization", b"proxy-connection"}, [("Connection", "close")], first=b"GET /x HTTP/1.1")
    assert out == b"GET /x HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    assert rewrite_head(raw, set()) == raw + b"\r\n\r\n"
    with pytest.raises(ValueError):
        rewrite_head(raw, set(), [("Authorization", "token\r\nX-Injected: 1")])


def test_keeps_alive():
    assert keeps_alive(b"1.1", set()) and keeps_alive(b"1.1", {b"keep-alive"})
    assert not keeps_alive(b"1.1", {b"close"}) and not keeps_alive(b"1.1", {b"keep-alive", b"close"})
    assert not keeps_alive(b"1.0", set()) and keeps_alive(b"1.0", {b"keep-alive"})
    assert not keeps_alive(b"1.0", {b"keep-alive", b"close"}), "close wins over keep-alive (RFC 9112 9.3)"
