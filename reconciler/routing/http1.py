"""Just enough HTTP/1.1 parsing for a reverse proxy, strict where smuggling lurks.

Request and response heads are parsed into a small structure; message bodies are
never parsed, only delimited (`Content-Length`, or chunked framing scanned by
`ChunkScanner` and passed through byte for byte), so streams flow unbuffered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_HEADER = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (\S+) HTTP/(1\.[01])")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) ([0-9]{3})(?: (.*))?")
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


@dataclass
class Head:
    """A parsed message head. `headers` keeps names as sent; `lower` are the
    lower-cased names in the same order."""

    version: bytes
    headers: list[tuple[bytes, bytes]]
    lower: list[bytes]
    method: bytes = b""
    target: bytes = b""
    status: int = 0
    reason: bytes = b""
    _map: dict[bytes, list[bytes]] = field(default_factory=dict)

    def get_all(self, name: bytes) -> list[bytes]:
        return self._map.get(name, [])

    def get(self, name: bytes) -> bytes | None:
        values = self._map.get(name)
        return values[0] if values else None

    def tokens(self, name: bytes) -> set[bytes]:
        """Comma-separated tokens of every `name` header, lower-cased."""
        out: set[bytes] = set()
        for v in self._map.get(name, ()):
            for t in v.split(b","):
                t = t.strip().lower()
                if t:
                    out.add(t)
        return out


def _parse_headers(lines: list[bytes], head: Head) -> None:
    m: dict[bytes, list[bytes]] = {}
    headers = head.headers
    lower = head.lower
    for line in lines:
        mt = _HEADER.fullmatch(line)
        if mt is None:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "obsolete header line folding is not accepted")
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        name, value = mt.group(1), mt.group(2)
        if b"\x00" in value:
            raise HttpError(400, "NUL in a header value")
        ln = name.lower()
        headers.append((name, value))
        lower.append(ln)
        m.setdefault(ln, []).append(value)
    head._map = m


def parse_request_head(raw: bytes) -> Head:
    """Parse a request head (without the final CRLFCRLF)."""
    lines = raw.split(b"\r\n")
    mt = _REQUEST_LINE.fullmatch(lines[0])
    if mt is None:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    head = Head(version=mt.group(3), headers=[], lower=[], method=mt.group(1), target=mt.group(2))
    _parse_headers(lines[1:], head)
    return head


def parse_response_head(raw: bytes) -> Head:
    lines = raw.split(b"\r\n")
    mt = _STATUS_LINE.fullmatch(lines[0])
    if mt is None:
        raise HttpError(502, f"malformed status line {lines[0][:80]!r}")
    head = Head(version=mt.group(1), headers=[], lower=[], status=int(mt.group(2)), reason=mt.group(3) or b"")
    _parse_headers(lines[1:], head)
    return head


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
        values = {v.strip() for v in b",".join(cl).split(b",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise HttpError(400, "invalid Content-Length")
        n = int(next(iter(values)))
        return (LENGTH, n) if n else (NONE, 0)
    return NONE, 0


def response_framing(head: Head, method: bytes) -> tuple[int, int]:
    """(kind, length) of a response body (RFC 9112 section 6.3)."""
    status = head.status
    if method == b"HEAD" or 100 <= status < 200 or status in (204, 304):
        return NONE, 0
    te = head.get_all(b"transfer-encoding")
    if te:
        codings = [t.strip().lower() for v in te for t in v.split(b",") if t.strip()]
        if codings and codings[-1] == b"chunked":
            return CHUNKED, 0
        return UNTIL_CLOSE, 0
    cl = head.get_all(b"content-length")
    if cl:
        values = {v.strip() for v in b",".join(cl).split(b",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise HttpError(502, "invalid Content-Length from upstream")
        n = int(next(iter(values)))
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
