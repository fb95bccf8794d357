"""What is particular to the grants forward proxy on the wire: its answers
(`net.responses.local_response` with `X-Fleet-Proxy: grants`, the connection
closed after them), CONNECT authorities, methods that would echo a credential,
reading a request head from a stream. Reason phrases, head rewriting and
keep-alive rules are `reconciler.net.responses`, shared with the routing proxy."""

from __future__ import annotations

import asyncio

from reconciler.net.http1 import skip_empty_lines
from reconciler.net.responses import local_response

AUTHENTICATE = [("Proxy-Authenticate", 'Basic realm="fleet"')]


class Answer(Exception):
    """A request answered by the proxy itself (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def answer(writer: asyncio.StreamWriter, status: int, text: str, extra: list[tuple[str, str]] | None = None) -> None:
    """Answer `status` and `text` (ending in one newline), marked `X-Fleet-Proxy:
    grants`, then `extra` headers; the connection is closed after it."""
    headers = [("X-Fleet-Proxy", "grants"), *(extra or [])]
    writer.write(local_response(status, text.rstrip("\n") + "\n", close=True, headers=headers))
    await writer.drain()


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
