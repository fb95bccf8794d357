"""Just enough HTTP/1.1 parsing for a reverse proxy, strict where smuggling lurks.

Request and response heads are parsed into a small structure; message bodies are
never parsed, only delimited (`Content-Length`, or chunked framing scanned by
`ChunkScanner` and passed through byte for byte), so streams flow unbuffered.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^ \x00-\x1f\x7f]+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DIGITS = re.compile(rb"[0-9]{1,18}")

# Headers that describe one connection, never forwarded as they are.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"transfer-encoding", b"proxy-authorization"}
)

REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


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

# One C-level pass validates a whole header section: token names, a colon
# right after the name, no CR, LF or NUL inside a line.
_HEADERS = re.compile(rb"(?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*)*")


def _check_headers(raw: bytes, start: int, status: int) -> None:
    if _HEADERS.fullmatch(raw, start) is not None:
        return
    for line in raw[start:].split(b"\r\n")[1:]:  # say what is wrong
        name, sep, _ = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            raise HttpError(status, "obsolete header line folding is not accepted")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise HttpError(status, f"malformed header line {line[:80]!r}")
    raise HttpError(status, "bare CR or LF, or NUL, in the message head")


def parse_request_head(raw: bytes) -> Head:
    """Parse a request head (without the final CRLFCRLF)."""
    eol = raw.find(b"\r\n")
    if eol < 0:
        eol = len(raw)
    mt = _REQUEST_LINE.fullmatch(raw, 0, eol)
    if mt is None:
        raise HttpError(400, f"malformed request line {raw[:min(eol, 80)]!r}")
    _check_headers(raw, eol, 400)
    return Head(raw, eol, mt.group(3), method=mt.group(1), target=mt.group(2))


def parse_response_head(raw: bytes) -> Head:
    eol = raw.find(b"\r\n")
    if eol < 0:
        eol = len(raw)
    mt = _STATUS_LINE.fullmatch(raw, 0, eol)
    if mt is None:
        raise HttpError(502, f"malformed status line {raw[:min(eol, 80)]!r}")
    _check_headers(raw, eol, 502)
    return Head(raw, eol, mt.group(1), status=int(mt.group(2)))


def header_dropper(names: frozenset[bytes] | set[bytes]) -> re.Pattern[bytes]:
    """A regex that removes every header line whose name is in `names` from a
    header block (lines preceded by CRLF)."""
    alt = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"\r\n(?:" + alt + rb"):[^\r\n]*", re.IGNORECASE)


# Body framing
NONE, LENGTH, CHUNKED, UNTIL_CLOSE = 0, 1, 2, 3


def request_framing(head: Head) -> tuple[int, int]:
    """(kind, length) of a request body; HttpError for an ambiguous one."""
    te = head.get_all(b"transfer-encoding")
    cl = head.get_all(b"content-length")
    if te:
        if cl:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        codings = [t.strip().lower() for v in te for t in v.split(b",") if t.strip()]
        if codings != [b"chunked"]:
            raise HttpError(501, "only Transfer-Encoding: chunked is supported")
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
    distinct = {v.strip() for v in b",".join(values).split(b",")}
    if len(distinct) != 1 or not _DIGITS.fullmatch(next(iter(distinct))):
        raise HttpError(status, message)
    return int(next(iter(distinct)))


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
    malformed framing.
    """

    __slots__ = ("state", "remaining", "line")

    def __init__(self) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = bytearray()

    def feed(self, data: bytes, i: int = 0) -> int:
        n = len(data)
        while i < n:
            st = self.state
            if st == _DATA:
                take = min(self.remaining, n - i)
                i += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _DATA_END
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
            if not line.endswith(b"\r\n"):
                raise HttpError(400, "chunk line not ended by CRLF")
            line = line[:-2]
            if st == _SIZE:
                size_part = line.split(b";", 1)[0].rstrip(b" \t")
                if not _HEX.fullmatch(size_part):
                    raise HttpError(400, f"invalid chunk size {size_part[:20]!r}")
                size = int(size_part, 16)
                if size:
                    self.state = _DATA
                    self.remaining = size
                else:
                    self.state = _TRAILER
            elif st == _DATA_END:
                if line:
                    raise HttpError(400, "chunk data longer than its size")
                self.state = _SIZE
            else:  # trailer section: ends with an empty line
                if not line:
                    self.state = _SIZE
                    return i
        return -1
