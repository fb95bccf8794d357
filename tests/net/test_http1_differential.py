"""Differential test: fleet's HTTP/1 parser against h11 and llhttp (httptools).

Hypothesis builds requests (heads with Content-Length or chunked bodies,
extensions, trailers) and mutates them where smuggling lives: a CRLF made a
bare LF or a bare CR, bytes inserted or deleted in the framing (spaces, tabs,
NUL, CR, LF, control characters, `;`, `=`, quotes, digits, commas), duplicated
or conflicting Content-Length, Content-Length with Transfer-Encoding, other
Transfer-Encoding values, obs-fold, whitespace before a colon, bad or huge
chunk sizes. The same bytes go to the three parsers; the properties:

1. whatever fleet accepts, h11 accepts too, with the same body and the same
   bytes left after the message (fleet is never laxer than h11);
2. whatever fleet accepts, llhttp accepts too, with the same body, except
   where fleet follows h11 on purpose (`H11_OVER_LLHTTP`);
3. whatever fleet refuses, h11 or llhttp refuses too, except where fleet is
   stricter than both on purpose (`FLEET_ONLY`).

Where h11 and llhttp disagree, fleet follows (see `DIVERGENCES`, pinned case
by case below):

- llhttp (stricter) on: bare LF line ends and obs-fold in heads and trailers
  (h11 accepts both: a proxy that passes them on lets the next parser split
  the message elsewhere); control characters in field values; Content-Length
  together with Transfer-Encoding (h11 lets chunked win: the classic
  smuggling pair, refused); chunk extensions (h11 skips anything after `;`,
  bare CR included); whitespace after a chunk size; sizes of 2**64 or more;
  empty lines before the request line are skipped (RFC 9112 section 2.2; h11
  refuses them); the request target must be in origin, absolute, asterisk or
  (CONNECT) authority form (h11 takes any visible characters).
- h11 on: repeated identical Content-Length values (RFC 9110 section 8.6;
  llhttp refuses any repetition); any token as a method (llhttp knows a fixed
  list; a proxy passes WebDAV, lower case and new methods on); two spaces in
  the request line (refused); one Host on HTTP/1.1 (refused without); trailer
  fields named like framing headers (trailers are never interpreted);
  Transfer-Encoding other than exactly `chunked` (501; llhttp accepts
  `gzip, chunked`); chunk sizes of more than 20 digits.
- neither: HTTP versions other than 1.0 and 1.1 are refused (a proxy for
  HTTP/1 has nothing to do with `HTTP/2.0` or `HTTP/0.9` request lines);
  chunk extensions with an empty name or value (`;;a`, `;a=`, `;=b`), which
  llhttp accepts, are refused (RFC 9112 section 7.1.1 grammar).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.net.http1 import skip_empty_lines
from tests.net.parsers import Verdict, fleet, h11_verdict, llhttp_verdict

FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=5000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# Methods llhttp knows (a subset: the ones generated).
METHODS = [b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS", b"PROPFIND"]
TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = bytes(range(0x21, 0x7F))
INSERTS = [b" ", b"\t", b"\x00", b"\r", b"\n", b"\r\n", b"\x01", b"\x0b", b"\x7f", b"\xff", b";", b"=", b'"',
           b"0", b"a", b",", b":", b"-", b"+"]

tokens = st.binary(min_size=1, max_size=6).map(lambda b: bytes(TOKEN[x % len(TOKEN)] for x in b))
values = st.binary(max_size=12).map(lambda b: bytes(VCHAR[x % len(VCHAR)] for x in b).strip())
quoted = st.binary(max_size=6).map(lambda b: b'"' + bytes(VCHAR[x % len(VCHAR)] for x in b).replace(b'"', b"").replace(b"\\", b"") + b'"')
extension = st.tuples(tokens, st.one_of(st.just(b""), tokens.map(lambda t: b"=" + t), quoted.map(lambda q: b"=" + q)))


@st.composite
def requests(draw) -> bytes:
    """A well-formed request, Content-Length or chunked or no body."""
    method = draw(st.sampled_from(METHODS))
    target = b"/" + draw(values).replace(b" ", b"")
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    lines = [method + b" " + target + b" HTTP/" + version, b"Host: " + draw(st.sampled_from([b"a.localhost", b"example.com:8080"]))]
    for name, value in draw(st.lists(st.tuples(tokens, values), max_size=3)):
        if name.lower() not in (b"host", b"content-length", b"transfer-encoding", b"upgrade", b"connection"):
            lines.append(name + b": " + value)
    kind = draw(st.sampled_from(["none", "length", "chunked", "chunked"]))
    body = b""
    if kind == "length":
        body = draw(st.binary(max_size=20))
        lines.append(b"Content-Length: " + str(len(body)).encode())
    elif kind == "chunked":
        lines.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"chunked", b"Chunked", b"chunked "])))
        for data in draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3)):
            size = b"%x" % len(data)
            if draw(st.booleans()):
                size = size.upper().rjust(draw(st.integers(1, 4)), b"0")
            exts = b"".join(b";" + n + v for n, v in draw(st.lists(extension, max_size=2)))
            body += size + exts + b"\r\n" + data + b"\r\n"
        body += b"0\r\n"
        for name, value in draw(st.lists(st.tuples(tokens, values), max_size=2)):
            body += name + b": " + value + b"\r\n"
        body += b"\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _crlfs(data: bytes) -> list[int]:
    return [m.start() for m in re.finditer(b"\r\n", data)]


@st.composite
def mutated(draw) -> bytes:
    data = draw(requests())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["bare_lf", "bare_cr", "insert", "insert", "delete", "header", "size", "fold"]))
        crlfs = _crlfs(data)
        if op in ("bare_lf", "bare_cr") and crlfs:
            i = draw(st.sampled_from(crlfs))
            data = data[:i] + (b"\n" if op == "bare_lf" else b"\r") + data[i + 2 :]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data = data[:i] + draw(st.sampled_from(INSERTS)) + data[i:]
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + data[i + 1 :]
        elif op == "header":  # one more header line, framing-related, before the end of the head
            line = draw(st.sampled_from([
                b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: 5, 5", b"Content-Length: 05",
                b"Content-Length: 18446744073709551616", b"Content-Length: 18446744073709551615",
                b"Content-Length : 5", b"Content-Length: +5", b"Content-Length: 0x5", b"Content-Length:",
                b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked", b"Transfer-Encoding: chunked,",
                b"Transfer-Encoding: identity", b"Transfer-Encoding : chunked", b"Transfer-Encoding:\tchunked",
                b"Host: b", b"X: a\x01b", b"X: a\x00b", b"X : y",
            ]))
            end = data.find(b"\r\n\r\n")
            at = draw(st.sampled_from([c for c in crlfs if c <= end] or [0]))
            data = data[:at] + b"\r\n" + line + data[at:]
        elif op == "size":  # replace a chunk size line
            sizes = [m for m in re.finditer(rb"\r\n([0-9A-Fa-f]+)((?:;[^\r\n]*)?)\r\n", data) if m.start() >= data.find(b"\r\n\r\n")]
            if sizes:
                m = draw(st.sampled_from(sizes))
                new = draw(st.sampled_from([
                    b"0x" + m.group(1), b"-" + m.group(1), b"+" + m.group(1), b" " + m.group(1), m.group(1) + b" ",
                    m.group(1) + b"\t", m.group(1).rjust(16, b"0"), m.group(1).rjust(20, b"0"), m.group(1).rjust(21, b"0"),
                    b"ffffffffffffffff", b"10000000000000000", b"fffffffffffffffffffff", m.group(1) + b";",
                    m.group(1) + b";a=\"b", m.group(1) + b" ;a", m.group(1) + b";a\rb", m.group(1) + b";a=b c",
                    b"g",
                ]))
                data = data[: m.start(1)] + new + data[m.end(2) :]
        elif op == "fold" and crlfs:
            i = draw(st.sampled_from(crlfs))
            data = data[:i] + b"\r\n" + draw(st.sampled_from([b" ", b"\t"])) + b"x" + data[i:]
    return data


# -- where fleet departs from one reference on purpose ---------------------------------------

_REQUEST_LINE = re.compile(rb"(?:\r\n)*([^ \r\n]*) [^ \r\n]* HTTP/([^\r\n]*)\r\n")
_LLHTTP_METHODS = {m for m in METHODS} | {b"HEAD", b"CONNECT", b"TRACE"}


def _head_and_body(data: bytes) -> tuple[bytes, bytes]:
    end = data.find(b"\r\n\r\n")
    return (data, b"") if end < 0 else (data[: end + 2], data[end + 4 :])


def h11_over_llhttp(data: bytes) -> bool:
    """Inputs fleet may accept although llhttp refuses them: the h11 choices."""
    head, body = _head_and_body(data)
    m = _REQUEST_LINE.match(head)
    if m is not None and m.group(1) not in _LLHTTP_METHODS:
        return True  # any token as a method
    low = head.lower()
    if low.count(b"\r\ncontent-length:") > 1 or re.search(rb"\r\ncontent-length:[^\r\n]*,", low):
        return True  # repeated identical Content-Length values
    if re.search(rb"(?:^|\r\n)0*[0-9a-f]{17,20}[;\r]", body.lower()):
        return True  # sizes of 17 to 20 digits with leading zeros
    if re.search(rb"\r\n0\r\n(?:[^\r\n]*\r\n)*(?:content-length|transfer-encoding)", body.lower()):
        return True  # framing-named trailers
    return False


def fleet_only(data: bytes) -> bool:
    """Inputs fleet refuses although both references accept them: request
    lines of other HTTP versions, and chunk extensions with an empty name or
    value (`;;a`, `;a=`, `;=b`: llhttp takes them, RFC 9112 section 7.1.1
    does not)."""
    m = _REQUEST_LINE.match(data)
    if m is not None and m.group(2) not in (b"1.0", b"1.1"):
        return True
    for ext in re.findall(rb"(?:^|\r\n)[0-9A-Fa-f]+(;[^\r\n]*)\r\n", _head_and_body(data)[1]):
        if re.search(rb";;|;=|=;|=$", ext):
            return True
    return False


def check(data: bytes) -> tuple[Verdict, Verdict, Verdict]:
    f, ll = fleet(data), llhttp_verdict(data)
    h = h11_verdict(data[skip_empty_lines(data) :])  # empty lines first: skipped (RFC 9112 2.2), h11 refuses them
    if f.ok:
        assert h.ok, f"fleet accepts what h11 refuses ({h.why}): {data!r}"
        assert (f.body, f.rest) == (h.body, h.rest), f"fleet and h11 split differently: {data!r}"
        if ll.ok:
            assert f.body == ll.body, f"fleet and llhttp decode differently: {data!r}"
        else:
            assert h11_over_llhttp(data), f"fleet accepts what llhttp refuses ({ll.why}): {data!r}"
    elif h.ok and ll.ok:
        assert fleet_only(data), f"fleet refuses ({f.why}) what h11 and llhttp accept: {data!r}"
    return f, h, ll


@FAST
@given(requests())
def test_well_formed_requests_are_accepted_alike(data):
    f, h, ll = check(data)
    assert f.ok and h.ok and ll.ok and f.body == h.body == ll.body


@FAST
@given(mutated())
def test_mutated_requests_fleet_agrees(data):
    check(data)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(mutated())
def test_mutated_requests_fleet_agrees_many(data):
    check(data)


# -- the divergences, one by one ------------------------------------------------------------

B = b"POST / HTTP/1.1\r\nHost: a\r\n"
T = B + b"Transfer-Encoding: chunked\r\n\r\n"
# (request, h11 accepts, llhttp accepts, fleet accepts)
DIVERGENCES = [
    (b"GET / HTTP/1.1\nHost: a\n\n", True, False, False),  # bare LF in a head: llhttp
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", True, False, False),  # obs-fold: llhttp
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", True, False, False),  # control character: llhttp
    (B + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", True, False, False),
    (T + b"5;a\rb\r\nhello\r\n0\r\n\r\n", True, False, False),  # bare CR in an extension: llhttp
    (T + b"5;\r\nhello\r\n0\r\n\r\n", True, False, False),  # empty extension: llhttp
    (T + b"5 \r\nhello\r\n0\r\n\r\n", True, False, False),  # whitespace after the size: llhttp
    (T + b"5\r\nhello\r\n0\r\nX: 1\n\r\n", True, False, False),  # bare LF in a trailer: llhttp
    (T + b"5\r\nhello\r\n0\r\nX: 1\r\n 2\r\n\r\n", True, False, False),  # obs-fold in a trailer: llhttp
    (B + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", False, False, False),  # 2**68: both refuse (h11: incomplete)
    (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", False, True, True),  # empty line first: llhttp, RFC 9112 2.2
    (B + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", True, False, True),  # same value twice: h11
    (B + b"Content-Length: 5, 5\r\n\r\nhello", True, False, True),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", True, False, True),  # any token as a method: h11
    (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", False, True, False),  # two spaces: h11
    (b"GET / HTTP/1.1\r\n\r\n", False, True, False),  # no Host: h11
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", False, True, False),  # two Hosts: h11
    (T + b"5\r\nhello\r\n0\r\nContent-Length: 9\r\n\r\n", True, False, True),  # trailers are not interpreted: h11
    (B + b"Transfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", False, True, False),  # 501: h11
    (T + b"000000000000000000005\r\nhello\r\n0\r\n\r\n", False, True, False),  # 21 digits: h11
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", True, True, False),  # neither: HTTP/1 only
    (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", True, True, False),
    (T + b"5;;a\r\nhello\r\n0\r\n\r\n", True, True, False),  # empty extension name: RFC 9112
    (T + b"5;a=\r\nhello\r\n0\r\n\r\n", True, True, False),
    (T + b"5;=b\r\nhello\r\n0\r\n\r\n", True, True, False),
    (b"OPTIONS ;/ HTTP/1.1\r\nHost: a\r\n\r\n", True, False, False),  # target form: llhttp
]


@pytest.mark.parametrize("data, h11_ok, llhttp_ok, fleet_ok", DIVERGENCES)
def test_documented_divergences(data, h11_ok, llhttp_ok, fleet_ok):
    assert (h11_verdict(data).ok, llhttp_verdict(data).ok, fleet(data).ok) == (h11_ok, llhttp_ok, fleet_ok)
    check(data)


def test_generator_reaches_both_outcomes():
    """The mutations are not all trivially refused: a sample has both outcomes."""
    seen: set[bool] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(mutated())
    def sample(data):
        seen.add(fleet(data).ok)

    sample()
    assert seen == {True, False}
