"""The forward proxy's body copy is strict where smuggling lurks: chunked
framing needs CRLF everywhere (no bare LF, the CRLF after each chunk's data is
required), sizes are bounded hex, and a malformed piece is never forwarded;
Content-Length follows http1's one rule."""

from __future__ import annotations

import asyncio

import pytest

from reconciler.net.pipes import copy_body
from reconciler.net.http1 import CHUNKED, LENGTH, HttpError, parse_request_head, request_framing


class Sink:
    """A StreamWriter stand-in that keeps what was written."""

    def __init__(self):
        self.data = b""

    def write(self, b: bytes) -> None:
        self.data += b

    async def drain(self) -> None:
        pass


def run(body: bytes, kind: int = CHUNKED, length: int = 0) -> tuple[bytes, bytes]:
    """(forwarded, left unread) after copying one body from `body`."""

    async def go():
        r = asyncio.StreamReader(limit=64 * 1024)
        r.feed_data(body)
        r.feed_eof()
        out = Sink()
        await copy_body(kind, length, r, out)
        return out.data, await r.read()

    return asyncio.run(go())


@pytest.mark.parametrize("body", [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"0\r\n\r\n",
])
def test_well_formed_chunked_bodies_pass_byte_for_byte(body):
    forwarded, rest = run(body + b"GET /next HTTP/1.1\r\n\r\n")
    assert forwarded == body
    assert rest == b"GET /next HTTP/1.1\r\n\r\n"  # never read past the end


@pytest.mark.parametrize("body, why", [
    (b"5\nhello\r\n0\r\n\r\n", "bare LF after the size"),
    (b"5\r\nhello\n0\r\n\r\n", "bare LF after the data"),
    (b"5\r\nhelloXY0\r\n\r\n", "no CRLF after the data"),
    (b"5\r\nhello!!\r\n0\r\n\r\n", "data longer than its size"),
    (b"5\r\nhello\r\n0\r\n\n", "bare LF ending the trailers"),
    (b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n", "bare LF in a trailer"),
    (b"-5\r\nhello\r\n0\r\n\r\n", "negative size"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "0x prefix"),
    (b"1234567890abcdef0\r\n", "size too long"),
    (b" 5\r\nhello\r\n0\r\n\r\n", "space before the size"),
    (b"\r\n5\r\nhello\r\n0\r\n\r\n", "empty size line"),
])
def test_malformed_chunked_bodies_are_refused_before_forwarding(body, why):
    with pytest.raises((HttpError, asyncio.IncompleteReadError)):
        forwarded, _ = run(body)
    # whatever was forwarded before the error is a well-formed prefix, never the bad piece
    async def prefix():
        r = asyncio.StreamReader()
        r.feed_data(body)
        r.feed_eof()
        out = Sink()
        try:
            await copy_body(CHUNKED, 0, r, out)
        except (HttpError, asyncio.IncompleteReadError):
            pass
        return out.data

    sent = asyncio.run(prefix())
    assert body.startswith(sent) and b"\n" not in sent.replace(b"\r\n", b""), why


def test_a_truncated_chunked_body_is_an_error():
    with pytest.raises(asyncio.IncompleteReadError):
        run(b"5\r\nhel")


def test_content_length_one_rule():
    forwarded, rest = run(b"hello, extra", kind=LENGTH, length=5)
    assert forwarded == b"hello" and rest == b", extra"
    ok = parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5")
    assert request_framing(ok) == (LENGTH, 5)
    for bad in (b"Content-Length: 5\r\nContent-Length: 6", b"Content-Length: +5", b"Content-Length: 5, 6",
                b"Content-Length: 5\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked"):
        with pytest.raises(HttpError):
            request_framing(parse_request_head(b"POST / HTTP/1.1\r\nHost: a\r\n" + bad))


def test_read_head_skips_crlf_empty_lines_only():
    from reconciler.grants.forward_wire import Answer, read_head

    async def head(data: bytes):
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return await read_head(r, 5)

    assert asyncio.run(head(b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")) == b"GET / HTTP/1.1\r\nHost: a"
    bare = asyncio.run(head(b"\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert bare is not None and bare.startswith(b"\n")  # not skipped: the parser refuses it
    with pytest.raises(HttpError):
        parse_request_head(bare)
    assert asyncio.run(head(b"\r\n")) is None  # a clean end
    with pytest.raises(Answer):
        asyncio.run(head(b"GET / HT"))  # cut in the middle of a head

