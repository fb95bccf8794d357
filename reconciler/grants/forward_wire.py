"""What the grants forward proxy says itself and how it rewrites heads: its
local responses, head rewriting, CONNECT authorities, reading a request head
from a stream. (The routing proxy has its own local responses for now.)"""

from __future__ import annotations

import asyncio

from reconciler.net.http1 import Head, skip_empty_lines

REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 501: "Not Implemented",
    502: "Bad Gateway", 504: "Gateway Timeout",
}
AUTHENTICATE = [("Proxy-Authenticate", 'Basic realm="fleet"')]


class Answer(Exception):
    """A request answered by the proxy itself (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def response(status: int, text: str, close: bool = True, extra: list[tuple[str, str]] | None = None) -> bytes:
    body = (text.rstrip("\n") + "\n").encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "X-Fleet-Proxy: grants"]
    lines += [f"{k}: {v}" for k, v in (extra or [])]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def answer(writer: asyncio.StreamWriter, status: int, text: str, extra: list[tuple[str, str]] | None = None) -> None:
    """Answer `status` and the text (the connection is closed after it)."""
    writer.write(response(status, text, extra=extra))
    await writer.drain()


def _header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def rewrite_head(raw: bytes, drop: set[bytes], add: list[tuple[str, str]], first: bytes | None = None) -> bytes:
    """`raw` (a head without its final CRLFCRLF) without the `drop` headers
    (lower-case names), with `add` appended; `first` replaces the first line."""
    lines = raw.split(b"\r\n")
    kept = [ln for ln in lines[1:] if _header_name(ln) not in drop]
    kept += [f"{k}: {v}".encode("latin-1") for k, v in add]
    return b"\r\n".join([first or lines[0], *kept]) + b"\r\n\r\n"


def split_authority(text: str, default_port: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            host, port = text, ""
    if port and not port.isdigit():
        raise Answer(400, f"bad port in {text!r}")
    p = int(port) if port else default_port
    host = host.lower().rstrip(".")
    if not host or not 0 < p < 65536:
        raise Answer(400, f"bad target {text!r}")
    return host, p


def reflecting(method: bytes) -> bool:
    """TRACE and TRACK echo the request, injected credential included."""
    return method.upper() in (b"TRACE", b"TRACK")


def wants_close(head: Head) -> bool:
    tokens = head.tokens(b"connection")
    if b"close" in tokens:
        return True
    return head.version == b"1.0" and b"keep-alive" not in tokens


async def read_head(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """A request head without its final CRLFCRLF (empty lines before it
    skipped); None at a clean EOF or when none began in time."""
    for _ in range(8):  # a few empty lines may come first (RFC 9112 section 2.2)
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial[skip_empty_lines(exc.partial) :]:
                raise Answer(400, "connection closed in the middle of a request head") from None
            return None
        except asyncio.LimitOverrunError:
            raise Answer(431, "request head too large") from None
        except asyncio.TimeoutError:
            return None
        start = skip_empty_lines(raw)
        if start < len(raw):
            return raw[start:-4]
    raise Answer(400, "empty lines instead of a request")
