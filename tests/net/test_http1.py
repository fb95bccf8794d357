"""reconciler.net.http1, the one HTTP/1 parser and framer of both proxies:
heads, the one Content-Length rule, Transfer-Encoding, chunked framing fed in
every split, trailers, and `Body` for each framing."""

from __future__ import annotations

import pytest

from reconciler.net.http1 import (
    CHUNKED,
    LENGTH,
    NONE,
    UNTIL_CLOSE,
    Body,
    ChunkScanner,
    HttpError,
    parse_request_head,
    parse_response_head,
    request_framing,
    request_host,
    response_framing,
    skip_empty_lines,
)

REQ = b"POST /p?q=1 HTTP/1.1\r\nHost: a.localhost\r\n"


def framing(extra: bytes) -> tuple[int, int]:
    return request_framing(parse_request_head(REQ + extra))


# -- heads ---------------------------------------------------------------------------------


def test_request_head_fields():
    head = parse_request_head(b"GET /x HTTP/1.1\r\nHost: a\r\nX-A:  1 \r\nx-a: 2\r\nConnection: keep-alive, Upgrade")
    assert (head.method, head.target, head.version) == (b"GET", b"/x", b"1.1")
    assert head.get_all(b"x-a") == [b"1", b"2"]
    assert head.get(b"host") == b"a" and head.has(b"connection") and not head.has(b"upgrade")
    assert head.connection == {b"keep-alive", b"upgrade"}
    assert head.block.startswith(b"\r\nHost: a")
    assert head.items()[1] == (b"X-A", b"1")


def test_response_head_fields():
    head = parse_response_head(b"HTTP/1.0 404 Not Found\r\nContent-Length: 3")
    assert (head.version, head.status, head.reason) == (b"1.0", 404, b"Not Found")
    assert parse_response_head(b"HTTP/1.1 204").status == 204


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\nHost: a",  # bare LF ending the request line
    b"GET / HTTP/1.1\r\nHost: a\nX: b",  # bare LF inside the header section
    b"GET / HTTP/1.1\r\nHost: a\rX: b",  # bare CR
    b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c",  # obs-fold
    b"GET / HTTP/1.1\r\n Host: a",  # whitespace before the first header line
    b"GET / HTTP/1.1\r\nHost : a",  # whitespace before the colon
    b"GET / HTTP/1.1\r\nHo(st: a",  # not a token
    b"GET / HTTP/1.1\r\n: a",  # empty name
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b",  # NUL
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b",  # other control characters
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb",
    b"G(T / HTTP/1.1\r\nHost: a",  # a method that is not a token
    b"GET  / HTTP/1.1\r\nHost: a",  # two spaces
    b"GET /\xff HTTP/1.1\r\nHost: a",  # obs-text in the target
    b"GET / HTTP/2.0\r\nHost: a",
    b"GET / HTTP/1.2\r\nHost: a",
    b"GET /",
])
def test_malformed_request_heads_are_400(raw):
    with pytest.raises(HttpError) as err:
        parse_request_head(raw)
    assert err.value.status == 400


def test_tolerated_request_heads():
    for raw in (b"get / HTTP/1.1\r\nHost: a", b"PROPFIND / HTTP/1.1\r\nHost: a", b"GET / HTTP/1.1\r\nHost: a\r\nX:\t\xfe\t",
                b"GET / HTTP/1.0", b"OPTIONS * HTTP/1.1\r\nHost: a", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443"):
        parse_request_head(raw)


def test_malformed_response_heads_are_502():
    for raw in (b"HTTP/1.1 20 OK", b"HTTP/1.1 200 OK\nX: 1", b"HTTP/1.1 200 OK\r\nX: \x01", b"HTTP/2 200"):
        with pytest.raises(HttpError) as err:
            parse_response_head(raw)
        assert err.value.status == 502


def test_host_and_empty_lines():
    assert request_host(parse_request_head(b"GET / HTTP/1.1\r\nHost: a")) == b"a"
    assert request_host(parse_request_head(b"GET / HTTP/1.0")) is None
    with pytest.raises(HttpError):
        request_host(parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b"))
    assert skip_empty_lines(b"\r\n\r\nGET") == 4
    assert skip_empty_lines(b"\n\r\nGET") == 0  # only CRLF pairs are empty lines


# -- framing -------------------------------------------------------------------------------


def test_request_framing_rules():
    assert request_framing(parse_request_head(REQ[:-2])) == (NONE, 0)
    assert framing(b"Content-Length: 5") == (LENGTH, 5)
    assert framing(b"Content-Length: 0") == (NONE, 0)
    assert framing(b"Content-Length: 005") == (LENGTH, 5)
    assert framing(b"Content-Length: 5\r\nContent-Length: 5") == (LENGTH, 5)  # RFC 9110 8.6, as h11
    assert framing(b"Content-Length: 5, 5") == (LENGTH, 5)
    assert framing(b"Content-Length: 18446744073709551615") == (LENGTH, 2**64 - 1)
    assert framing(b"Transfer-Encoding: chunked") == (CHUNKED, 0)
    assert framing(b"Transfer-Encoding: CHUNKED") == (CHUNKED, 0)


@pytest.mark.parametrize("extra, status", [
    (b"Content-Length: 5\r\nContent-Length: 6", 400),
    (b"Content-Length: 5, 6", 400),
    (b"Content-Length: 5,", 400),
    (b"Content-Length: +5", 400),
    (b"Content-Length: -5", 400),
    (b"Content-Length: 0x5", 400),
    (b"Content-Length: 5 5", 400),
    (b"Content-Length:", 400),
    (b"Content-Length: 18446744073709551616", 400),  # 2**64
    (b"Content-Length: 000000000000000000005", 400),  # 21 digits
    (b"Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 5", 400),
    (b"Transfer-Encoding: gzip, chunked", 501),
    (b"Transfer-Encoding: chunked, chunked", 501),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 501),
    (b"Transfer-Encoding: chunked,", 501),
    (b"Transfer-Encoding: identity", 501),
])
def test_ambiguous_request_framing_is_refused(extra, status):
    with pytest.raises(HttpError) as err:
        framing(extra)
    assert err.value.status == status


def test_response_framing():
    def rf(raw: bytes, method: bytes = b"GET"):
        return response_framing(parse_response_head(raw), method)

    assert rf(b"HTTP/1.1 200 OK\r\nContent-Length: 3") == (LENGTH, 3)
    assert rf(b"HTTP/1.1 200 OK\r\nContent-Length: 3", b"HEAD") == (NONE, 0)
    assert rf(b"HTTP/1.1 204 No Content") == (NONE, 0)
    assert rf(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3") == (NONE, 0)
    assert rf(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked") == (CHUNKED, 0)
    assert rf(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip") == (UNTIL_CLOSE, 0)
    assert rf(b"HTTP/1.1 200 OK") == (UNTIL_CLOSE, 0)
    with pytest.raises(HttpError) as err:
        rf(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4")
    assert err.value.status == 502


# -- chunked -------------------------------------------------------------------------------

GOOD = [
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"5;a=b;c\r\nhello\r\n6;q=\"x y\"\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: \r\n\r\n", b"0123456789"),
    (b"0005\r\n\r\n\r\n\n\r\n0\r\n\r\n", b"\r\n\r\n\n"),  # data is opaque
    (b"0\r\n\r\n", b""),
]


@pytest.mark.parametrize("body, payload", GOOD)
def test_chunked_bodies_in_every_split(body, payload):
    tail = b"GET /next HTTP/1.1\r\n\r\n"
    data = body + tail
    for cut in range(len(body) + 1):  # two pieces, cut anywhere
        sc = ChunkScanner()
        out: list[bytes] = []
        first = sc.feed(data[:cut], 0, out)
        assert first == -1 or (first == len(body) and cut >= len(body))
        end = first if first >= 0 else cut + sc.feed(data[cut:], 0, out) if cut < len(data) else -1
        assert end == len(body) and b"".join(out) == payload
    sc = ChunkScanner()  # one byte at a time
    out = []
    ends = [sc.feed(data[k : k + 1], 0, out) for k in range(len(body))]
    assert ends[-1] == 1 and all(e == -1 for e in ends[:-1]) and b"".join(out) == payload


@pytest.mark.parametrize("body", [
    b"5\nhello\r\n0\r\n\r\n",  # bare LF after the size
    b"5\r\nhello\n0\r\n\r\n",  # bare LF after the data
    b"5\r\nhello\r0\r\n\r\n",  # bare CR after the data
    b"5\r\nhelloXY0\r\n\r\n",  # no CRLF after the data
    b"5\rhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\n",  # bare LF ending the trailers
    b"5\r\nhello\r\n0\r\nX: 1\n\r\n",  # bare LF in a trailer
    b"5\r\nhello\r\n0\r\nX T: 1\r\n\r\n",  # not a field line
    b"5\r\nhello\r\n0\r\nX: 1\r\n 2\r\n\r\n",  # obs-fold in the trailers
    b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace after the size
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 ;a\r\nhello\r\n0\r\n\r\n",
    b"5;\r\nhello\r\n0\r\n\r\n",  # empty extension
    b"5;a b\r\nhello\r\n0\r\n\r\n",
    b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    b"5;a=\"b\r\nhello\r\n0\r\n\r\n",  # unterminated quoted string
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"\r\n5\r\nhello\r\n0\r\n\r\n",  # empty size line
    b"fffffffffffffffff\r\n",  # 2**68 - 1
    b"000000000000000000005\r\nhello\r\n0\r\n\r\n",  # 21 digits
])
def test_malformed_chunked_framing_is_refused(body):
    with pytest.raises(HttpError):
        ChunkScanner().feed(body)
    sc = ChunkScanner()  # byte by byte: refused as well, never accepted
    with pytest.raises(HttpError):
        for k in range(len(body)):
            assert sc.feed(body[k : k + 1]) == -1


def test_chunk_lines_are_bounded():
    with pytest.raises(HttpError):
        ChunkScanner().feed(b"5;a=" + b"b" * 9000)


def test_largest_chunk_size_waits_for_data():
    sc = ChunkScanner()
    assert sc.feed(b"ffffffffffffffff\r\nabc") == -1 and sc.remaining == 2**64 - 1 - 3


# -- Body ----------------------------------------------------------------------------------


def test_body_length_chunked_none_and_until_close():
    b = Body(LENGTH, 5)
    out: list[bytes] = []
    assert b.feed(b"hel", 0, out) == -1 and b.wanted() == 2
    assert b.feed(b"xxlo!", 2, out) == 4 and b.done and b"".join(out) == b"hello"
    b.eof()
    assert Body(NONE).done and Body(NONE).feed(b"abc", 1) == 1
    assert Body(LENGTH, 0).done
    b = Body(CHUNKED)
    out = []
    assert b.feed(b"3\r\nab", 0, out) == -1 and b.wanted() == 1
    assert b.feed(b"c\r\n0\r\n\r\nrest", 0, out) == 8 and b"".join(out) == b"abc"
    b = Body(UNTIL_CLOSE)
    out = []
    assert b.feed(b"abc", 0, out) == -1 and b.wanted() == -1 and out == [b"abc"]
    b.eof()


def test_a_body_cut_short_is_an_error_at_eof():
    for b in (Body(LENGTH, 5), Body(CHUNKED)):
        b.feed(b"3\r\n")
        with pytest.raises(HttpError):
            b.eof()


# -- Body as the routing proxy feeds it: where a body ends, the rest the next message -------


def test_length_body_ends_across_pieces():
    d = Body(LENGTH, 10)
    assert d.feed(b"0123") == -1
    assert d.feed(b"456") == -1
    assert d.feed(b"789GET /next") == 3  # the rest is the next message
    assert d.remaining == 0


def test_chunked_body_end_and_pipelined_rest():
    d = Body(CHUNKED)
    data = b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1"
    assert d.feed(data[:7]) == -1
    end = d.feed(data[7:])
    assert data[7:][end:] == b"GET / HTTP/1.1"


@pytest.mark.parametrize("bad", [b"5\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX0\r\n\r\n", b"zz\r\n", b"5;\r\nhello\n"])
def test_chunked_body_refuses_bad_framing(bad):
    with pytest.raises(HttpError):
        Body(CHUNKED).feed(bad)


def test_none_and_until_close():
    assert Body(NONE).feed(b"GET / HTTP/1.1") == 0
    d = Body(UNTIL_CLOSE)
    assert d.feed(b"a" * 100) == -1 and d.feed(b"b") == -1
