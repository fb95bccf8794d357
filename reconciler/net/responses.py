"""What a proxy says itself, and how it rewrites heads it passes on.

- `REASONS` / `reason(status)`: the reason phrase of every standard status.
- `local_response(...)`: a whole response the proxy answers on its own (an error
  page, a 407, an index), with Content-Length, and `Connection: close` when the
  connection ends after it. Header names and values are checked: nothing a
  caller passes can split the head.
- `keeps_alive(version, tokens)`: whether a message leaves its connection open.
- Hop-by-hop rewriting: `HOP_BY_HOP` (headers that describe one connection),
  `connection_named(tokens)` (the extra headers a `Connection` header names, never
  the framing ones), `header_dropper`/`dropper` (one C-level regex substitution
  that cuts named header lines out of a header block) and `rewrite_head` (a
  line-by-line rewrite for the rare paths: drop, add, replace the first line).

Heads here are bytes as `reconciler.net.http1` keeps them: a "block" is the
header section with each line *preceded* by CRLF (`Head.block`); a "raw" head is
the first line and the header lines joined by CRLF, without the final CRLFCRLF.
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus
from typing import AbstractSet, Iterable, Mapping

REASONS: Mapping[int, str] = {s.value: s.phrase for s in HTTPStatus}
TEXT_PLAIN = "text/plain; charset=utf-8"

# Headers that describe one connection, never forwarded as they are.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"upgrade", b"transfer-encoding", b"proxy-authorization"}
)
# Never dropped because a Connection header names them: that would desynchronise
# the two sides' idea of where a message ends (framing), or of where it goes.
NEVER_DROPPED = frozenset({b"content-length", b"transfer-encoding", b"host"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def reason(status: int) -> str:
    """The standard reason phrase of `status` ("Error" for an unknown code)."""
    return REASONS.get(status, "Error")


def local_response(
    status: int,
    body: str | bytes,
    *,
    close: bool = False,
    content_type: str = TEXT_PLAIN,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A whole HTTP/1.1 response: the status line, Content-Type, Content-Length,
    `headers` in order, then `Connection: close` when `close`, and the body.
    ValueError for a header name that is not a token or a value with CR, LF or
    another control character (a caller's bug, never sent)."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"HTTP/1.1 {status} {reason(status)}", f"Content-Type: {content_type}", f"Content-Length: {len(data)}"]
    for name, value in headers:
        lines.append(f"{name}: {value}")
    if close:
        lines.append("Connection: close")
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"refusing to send a malformed header line {line[:80]!r}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def keeps_alive(version: bytes, connection: AbstractSet[bytes]) -> bool:
    """Whether a message of HTTP `version` (b"1.0", b"1.1") with these Connection
    tokens (lower case) leaves its connection open: never with `close` (it wins
    over `keep-alive`), else HTTP/1.1 always and HTTP/1.0 only with `keep-alive`
    (RFC 9112 section 9.3)."""
    if b"close" in connection:
        return False
    return version != b"1.0" or b"keep-alive" in connection


def connection_named(tokens: AbstractSet[bytes], already: AbstractSet[bytes] = HOP_BY_HOP) -> frozenset[bytes]:
    """The header names a Connection header's `tokens` (lower case) ask to drop
    beyond `already` (what is dropped anyway): never `close`, never framing or Host."""
    extra = tokens - already
    if not extra:
        return frozenset()
    return frozenset(extra) - NEVER_DROPPED - {b"close"}


def header_dropper(names: AbstractSet[bytes]) -> re.Pattern[bytes]:
    """A regex that removes every header line whose name (lower case) is in
    `names` from a header block, case-insensitively: `pattern.sub(b"", block)`."""
    alt = b"|".join(re.escape(n) for n in sorted(names))
    return re.compile(rb"\r\n(?:" + alt + rb"):[^\r\n]*", re.IGNORECASE)


@functools.lru_cache(maxsize=64)
def dropper(names: frozenset[bytes]) -> re.Pattern[bytes]:
    """`header_dropper`, compiled once per set of names."""
    return header_dropper(names)


def drop_headers(block: bytes, names: frozenset[bytes]) -> bytes:
    """`block` without the header lines named in `names`."""
    return dropper(names).sub(b"", block) if names else block


def _header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def rewrite_head(
    raw: bytes, drop: AbstractSet[bytes], add: Iterable[tuple[str, str]] = (), first: bytes | None = None
) -> bytes:
    """`raw` (a head without its final CRLFCRLF) without the `drop` headers
    (lower-case names), with `add` appended, `first` replacing the first line
    when given; returned with its final CRLFCRLF. ValueError for an added line
    that would split the head."""
    lines = raw.split(b"\r\n")
    kept = [ln for ln in lines[1:] if _header_name(ln) not in drop]
    for name, value in add:
        if _TOKEN.fullmatch(name) is None or _FIELD_VALUE.fullmatch(value) is None:
            raise ValueError(f"refusing to add a malformed header {name[:40]!r}")
        kept.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join([first or lines[0], *kept]) + b"\r\n\r\n"
