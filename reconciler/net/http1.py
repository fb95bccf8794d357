"""The one HTTP/1.1 parser and framer of both proxies, strict where smuggling lurks.

Used by the routing relay (its hot path: heads kept as bytes, C-level scans)
and by the grants forward proxy. Heads are parsed into a small `Head`; bodies
are delimited, never re-encoded: `request_framing`/`response_framing` decide
the framing, `Body` (or, for chunked framing alone, `ChunkScanner`) finds where
a body ends as bytes arrive, optionally collecting its payload.

The rules (each checked by tests/net/test_http1_differential.py against h11
and llhttp, the parser of Node.js, through httptools):

- lines end with CRLF, in heads, chunk lines and trailers; a bare CR or LF, or
  a NUL, anywhere in them is an error (h11 accepts a bare LF: llhttp does not);
- request line `token SP target SP HTTP/1.0|1.1`, one space each (h11; llhttp
  accepts two); the method is any token (h11; llhttp knows a fixed list); the
  target in origin, absolute, asterisk or (CONNECT) authority form (llhttp;
  h11 takes any visible characters);
- header lines `token ":" value`: no whitespace before the colon, no obs-fold
  continuation lines (h11 unfolds them, llhttp refuses: refused), values of
  HTAB, SP, visible ASCII and obs-text only (h11 accepts other controls:
  llhttp does not);
- one Content-Length rule: decimal digits, at most 20 of them and below
  2**64; repeated lines or comma lists of the *same* value are one value
  (RFC 9110 section 8.6, as h11; llhttp refuses any repetition); different
  values are refused;
- Transfer-Encoding in a request: exactly one such line, `chunked` (any
  case), else 501 (h11); with Content-Length as well: refused (llhttp; h11
  lets chunked win);
- chunk sizes: 1 to 20 hex digits (h11) below 2**64 (llhttp), directly
  followed by the extensions, if any, and CRLF (no whitespace: llhttp);
  extensions `;name[=token|quoted-string]` (llhttp; h11 skips anything after
  `;`); the CRLF after each chunk's data is required; trailer lines follow the
  header-line rules.
"""

from __future__ import annotations

import re

_TOKEN_CHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(_TOKEN_CHARS + rb"+")
# Field values: HTAB, SP, VCHAR, obs-text (no other control character).
VALUE_CHARS = rb"[\t\x20-\x7e\x80-\xff]"
# A request target: visible ASCII only (both reference parsers refuse obs-text there).
TARGET_CHARS = rb"[\x21-\x7e]"
# The header section of a head: every line preceded by CRLF (see `Head.block`).
HEADER_LINES = rb"(?:\r\n" + _TOKEN_CHARS + rb"+:" + VALUE_CHARS + rb"*)*"
_FIELD_LINE = re.compile(_TOKEN_CHARS + rb"+:" + VALUE_CHARS + rb"*")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN_CHARS + rb"+) (" + TARGET_CHARS + rb"+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_DIGITS = re.compile(rb"[0-9]{1,20}")
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t\x20-\x7e\x80-\xff])*"'
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})(?:;" + _TOKEN_CHARS + rb"+(?:=(?:" + _TOKEN_CHARS + rb"+|" + _QUOTED + rb"))?)*\r\n"
)
MAX_SIZE = 2**64 - 1  # the largest Content-Length or chunk size


class HttpError(Exception):
    """A malformed message; `status` is what to answer when it was a request."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Head:
    """A message head, kept as bytes and looked into on demand.

    `raw` is the head without its final CRLFCRLF; `block` (`raw[start:]`) is
    the header section, each line preceded by CRLF, ready to be forwarded after
    hop-by-hop lines are cut out with one regex substitution. Lookups scan a
    lower-cased copy (same offsets) with `bytes.find`, so a request costs a few
    C-level scans instead of a Python loop over its headers.
    """

    __slots__ = ("raw", "low", "start", "version", "method", "target", "status", "first", "_conn")

    def __init__(self, raw: bytes, start: int, version: bytes, method: bytes = b"", target: bytes = b"", status: int = 0):
        self.raw = raw
        self.low = raw.lower()
        self.start = start
        self.version = version
        self.method = method
        self.target = target
        self.status = status
        self.first = raw[:start]
        self._conn: set[bytes] | None = None

    @property
    def block(self) -> bytes:
        return self.raw[self.start :]

    @property
    def reason(self) -> bytes:
        parts = self.first.split(b" ", 2)
        return parts[2] if len(parts) > 2 else b""

    def get_all(self, name: bytes) -> list[bytes]:
        """Values of every `name` header (name lower-case), in order."""
        low = self.low
        key = _KEYS.get(name) or b"\r\n" + name + b":"
        i = low.find(key, self.start)
        if i < 0:
            return []
        out: list[bytes] = []
        raw = self.raw
        n = len(key)
        while i >= 0:
            vs = i + n
            ve = low.find(b"\r\n", vs)
            if ve < 0:
                ve = len(low)
            out.append(raw[vs:ve].strip(b" \t"))
            i = low.find(key, ve)
        return out

    def get(self, name: bytes) -> bytes | None:
        values = self.get_all(name)
        return values[0] if values else None

    def has(self, name: bytes) -> bool:
        return self.low.find(_KEYS.get(name) or b"\r\n" + name + b":", self.start) >= 0

    def tokens(self, name: bytes) -> set[bytes]:
        """Comma-separated tokens of every `name` header, lower-cased."""
        values = self.get_all(name)
        if len(values) == 1 and b"," not in values[0]:  # the usual `Connection: keep-alive`
            t = values[0].strip().lower()
            return {t} if t else set()
        out: set[bytes] = set()
        for v in values:
            for t in v.split(b","):
                t = t.strip().lower()
                if t:
                    out.add(t)
        return out

    @property
    def connection(self) -> set[bytes]:
        """The Connection header's tokens (cached)."""
        if self._conn is None:
            self._conn = self.tokens(b"connection") if self.has(b"connection") else set()
        return self._conn

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every header as (name, value): for the rare paths only."""
        out = []
        for line in self.block.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            out.append((name, value.strip(b" \t")))
        return out


_KEYS = {
    n: b"\r\n" + n + b":"
    for n in (b"host", b"connection", b"content-length", b"transfer-encoding", b"upgrade", b"accept", b"x-forwarded-for")
}

# One C-level pass validates a whole header section.
_HEADERS = re.compile(HEADER_LINES)


def _check_headers(raw: bytes, start: int, status: int) -> None:
    if _HEADERS.fullmatch(raw, start) is not None:
        return
    for line in raw[start:].split(b"\r\n")[1:]:  # say what is wrong
        name, sep, _ = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            raise HttpError(status, "obsolete header line folding is not accepted")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise HttpError(status, f"malformed header line {line[:80]!r}")
    raise HttpError(status, "bare CR or LF, NUL or another control character in the message head")


def parse_request_head(raw: bytes) -> Head:
    """Parse a request head (without the final CRLFCRLF)."""
    eol = raw.find(b"\r\n")
    if eol < 0:
        eol = len(raw)
    mt = _REQUEST_LINE.fullmatch(raw, 0, eol)
    if mt is None:
        raise HttpError(400, f"malformed request line {raw[:min(eol, 80)]!r}")
    target = mt.group(2)
    if target[:1] != b"/" and not _other_form(mt.group(1), target):
        raise HttpError(400, f"malformed request target {target[:80]!r}")
    _check_headers(raw, eol, 400)
    return Head(raw, eol, mt.group(3), method=mt.group(1), target=target)


_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*://")


def _other_form(method: bytes, target: bytes) -> bool:
    """A request target that is not origin-form: `*`, absolute-form, or
    authority-form for CONNECT (RFC 9112 section 3.2)."""
    if method == b"CONNECT":
        return True
    return target == b"*" or _ABSOLUTE.match(target) is not None


def parse_response_head(raw: bytes) -> Head:
    """Parse a response head (without the final CRLFCRLF); errors are 502."""
    eol = raw.find(b"\r\n")
    if eol < 0:
        eol = len(raw)
    mt = _STATUS_LINE.fullmatch(raw, 0, eol)
    if mt is None:
        raise HttpError(502, f"malformed status line {raw[:min(eol, 80)]!r}")
    _check_headers(raw, eol, 502)
    return Head(raw, eol, mt.group(1), status=int(mt.group(2)))


def skip_empty_lines(buf: bytes | bytearray, i: int = 0) -> int:
    """Index of the first byte after the empty lines (CRLF pairs only) that
    may precede a request line (RFC 9112 section 2.2)."""
    while buf.startswith(b"\r\n", i):
        i += 2
    return i


def request_host(head: Head) -> bytes | None:
    """The request's one Host value, None without one; more than one is 400
    (RFC 9112 section 3.2)."""
    hosts = head.get_all(b"host")
    if len(hosts) > 1:
        raise HttpError(400, "more than one Host header")
    return hosts[0] if hosts else None


# Body framing
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


def request_framing(head: Head) -> tuple[int, int]:
    """(kind, length) of a request body; HttpError for an ambiguous one."""
    te = head.get_all(b"transfer-encoding")
    cl = head.get_all(b"content-length")
    if te:
        if cl:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if len(te) != 1 or te[0].lower() != b"chunked":
            raise HttpError(501, "only one Transfer-Encoding: chunked is supported")
        return CHUNKED, 0
    if cl:
        n = _content_length(cl, 400, "invalid Content-Length")
        return (LENGTH, n) if n else (NONE, 0)
    return NONE, 0


def _content_length(values: list[bytes], status: int, message: str) -> int:
    """One Content-Length from its header lines: equal repeated values are one
    value (RFC 9110 section 8.6); anything else is refused with `status`."""
    if len(values) == 1 and values[0].isdigit() and len(values[0]) < 19:
        return int(values[0])  # the common case, without splitting
    distinct = {v.strip(b" \t") for v in b",".join(values).split(b",")}
    text = next(iter(distinct))
    if len(distinct) != 1 or not _DIGITS.fullmatch(text) or int(text) > MAX_SIZE:
        raise HttpError(status, message)
    return int(text)


def response_framing(head: Head, method: bytes) -> tuple[int, int]:
    """(kind, length) of a response body (RFC 9112 section 6.3)."""
    status = head.status
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return NONE, 0
    if head.has(b"transfer-encoding"):
        codings = [t.strip().lower() for v in head.get_all(b"transfer-encoding") for t in v.split(b",") if t.strip()]
        if codings and codings[-1] == b"chunked":
            return CHUNKED, 0
        return UNTIL_CLOSE, 0
    cl = head.get_all(b"content-length")
    if cl:
        n = _content_length(cl, 502, "invalid Content-Length from upstream")
        return (LENGTH, n) if n else (NONE, 0)
    return UNTIL_CLOSE, 0


_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3
MAX_CHUNK_LINE = 8192


class ChunkScanner:
    """Finds where a chunked body ends, without copying the data it passes over.

    `feed(data, i)` scans `data` from index `i` and returns the index just past
    the end of the message, or -1 when the message goes on. Raises HttpError on
    malformed framing, before returning: a caller forwards only what was
    scanned. With `out`, the chunks' payload is appended to it as well.
    """

    __slots__ = ("state", "remaining", "line")

    def __init__(self) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = bytearray()

    def feed(self, data: bytes, i: int = 0, out: list[bytes] | None = None) -> int:
        n = len(data)
        while i < n:
            st = self.state
            if st == _DATA:
                take = min(self.remaining, n - i)
                if out is not None:
                    out.append(data[i : i + take])
                i += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _DATA_END
                continue
            if st == _DATA_END:  # exactly CRLF, nothing else, after a chunk's data
                if not self.line and data.startswith(b"\r\n", i):
                    i += 2
                    self.state = _SIZE
                    continue
                piece = data[i : i + 2 - len(self.line)]
                self.line += piece
                i += len(piece)
                if not b"\r\n".startswith(self.line):
                    raise HttpError(400, "chunk data not followed by CRLF")
                if len(self.line) == 2:
                    self.line.clear()
                    self.state = _SIZE
                continue
            j = data.find(b"\n", i)
            if j < 0:
                self.line += data[i:]
                if len(self.line) > MAX_CHUNK_LINE:
                    raise HttpError(400, "chunk line too long")
                return -1
            if self.line:
                self.line += data[i : j + 1]
                line = bytes(self.line)
                self.line.clear()
            else:
                line = data[i : j + 1]
            i = j + 1
            if len(line) > MAX_CHUNK_LINE:
                raise HttpError(400, "chunk line too long")
            if st == _SIZE:
                m = _CHUNK_LINE.fullmatch(line)
                if m is None:
                    raise HttpError(400, f"invalid chunk size line {line[:40]!r}")
                size = int(m.group(1), 16)
                if size > MAX_SIZE:
                    raise HttpError(400, "chunk size too large")
                if size:
                    self.state = _DATA
                    self.remaining = size
                else:
                    self.state = _TRAILER
            elif line == b"\r\n":  # the empty line ending the trailer section
                self.state = _SIZE
                return i
            elif not line.endswith(b"\r\n") or _FIELD_LINE.fullmatch(line, 0, len(line) - 2) is None:
                raise HttpError(400, f"malformed trailer line {line[:80]!r}")
        return -1


class Body:
    """One message body's framing, fed bytes as they arrive.

    `feed(data, i)` returns the index just past the body's end in `data`, or
    -1 when all of `data[i:]` belongs to the body and more is due; `out`, when
    given, collects the payload (chunked framing removed). `wanted()` says how
    many bytes may be read next without reading past the body (0: a line, so
    read up to LF). `eof()` raises when the body is cut short. Errors are
    HttpError, raised before the offending bytes are returned as body bytes.
    """

    __slots__ = ("kind", "remaining", "scanner", "done")

    def __init__(self, kind: int, length: int = 0) -> None:
        self.kind = kind
        self.remaining = length if kind == LENGTH else 0
        self.scanner = ChunkScanner() if kind == CHUNKED else None
        self.done = kind == NONE or (kind == LENGTH and not length)

    def feed(self, data: bytes, i: int = 0, out: list[bytes] | None = None) -> int:
        if self.done:
            return i
        kind = self.kind
        if kind == LENGTH:
            avail = len(data) - i
            if avail < self.remaining:
                self.remaining -= avail
                if out is not None:
                    out.append(data[i:])
                return -1
            end = i + self.remaining
            if out is not None:
                out.append(data[i:end])
            self.remaining = 0
            self.done = True
            return end
        if kind == CHUNKED:
            assert self.scanner is not None
            end = self.scanner.feed(data, i, out)
            self.done = end >= 0
            return end
        if out is not None:  # until close
            out.append(data[i:])
        return -1

    def wanted(self) -> int:
        if self.kind == LENGTH:
            return self.remaining
        if self.kind == CHUNKED:
            assert self.scanner is not None
            return self.scanner.remaining
        return -1  # until close: anything

    def eof(self) -> None:
        if not self.done and self.kind != UNTIL_CLOSE:
            raise HttpError(400, "connection closed in the middle of a message body")
