"""Request and response heads as the routing proxy passes them on.

Which headers are dropped (hop-by-hop ones, a client's own X-Forwarded-* and
X-Fleet-Port: the proxy sets those), what is added (X-Forwarded-*, the
target's Host and extra header, Connection), and the two fast-path patterns:
the common request (a body-less HTTP/1.1 GET-like request in one read) and the
common response (HTTP/1.1 with a status line the fast path can copy). Pure
functions on bytes; every head here was parsed by `reconciler.net.http1`.
"""

from __future__ import annotations

import re

from reconciler.net.http1 import Head
from reconciler.net.responses import HOP_BY_HOP, connection_named, drop_headers, header_dropper
from reconciler.routing.index import Target

_FORWARDED = frozenset({b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-for"})
# Set by the proxy alone (a Modal host's port router reads it): a client's own is dropped.
_FLEET_PORT = frozenset({b"x-fleet-port"})
# Transfer-Encoding is kept: chunked bodies pass through as they are.
REQUEST_DROPS = (HOP_BY_HOP - {b"transfer-encoding"}) | _FORWARDED | _FLEET_PORT
RESPONSE_DROPS = HOP_BY_HOP - {b"transfer-encoding"}
DROP_REQUEST = header_dropper(REQUEST_DROPS)
DROP_RESPONSE = header_dropper(RESPONSE_DROPS)
DROP_101 = header_dropper({b"connection", b"keep-alive", b"proxy-connection"})
_HOST_LINE = re.compile(rb"\r\nhost:[^\r\n]*", re.IGNORECASE)

# The fast paths are one regex match and a few byte scans each. Anything else
# (bodies, chunked, upgrades, HTTP/1.0, several Connection tokens, 1xx, HEAD
# ...) falls through to the general path, which handles every case.
_HDRS = rb"((?:\r\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*)*)"
FAST_REQUEST = re.compile(rb"(GET|DELETE|OPTIONS) (/[^ \x00-\x1f\x7f]*) HTTP/1\.1" + _HDRS)
FAST_RESPONSE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9](?: [^\x00-\x08\x0a-\x1f\x7f]*)?)" + _HDRS)

CLOSE_TAIL = b"\r\nConnection: close\r\n\r\n"
KEEP_ALIVE_TAIL = b"\r\nConnection: keep-alive\r\n\r\n"
END_TAIL = b"\r\n\r\n"


def forwarded_prefix(peer: bytes, scheme: bytes) -> bytes:
    """The X-Forwarded-* lines of a client connection, up to the host's value."""
    return b"\r\nX-Forwarded-For: " + peer + b"\r\nX-Forwarded-Proto: " + scheme + b"\r\nX-Forwarded-Host: "


def request_head(head: Head, target: bytes, host: bytes, t: Target, upgrade: bool, peer: bytes, scheme: bytes) -> bytes:
    """The request head sent to target `t`: origin-form `target`, hop-by-hop and
    forged forwarding headers cut, X-Forwarded-* set (a client's own
    X-Forwarded-For is extended), the route's Host and extra header applied,
    `Connection: keep-alive` (or the upgrade being asked for)."""
    block = drop_headers(DROP_REQUEST.sub(b"", head.block), connection_named(head.connection, REQUEST_DROPS))
    if t.host_header is not None:
        block = _HOST_LINE.sub(b"\r\nHost: " + t.host_header.replace(b"\\", b""), block, count=1)
    xff = head.get_all(b"x-forwarded-for") if head.has(b"x-forwarded-for") else None
    parts = [
        head.method,
        b" ",
        target,
        b" HTTP/",
        head.version,
        block,
        b"\r\nX-Forwarded-For: ",
        b", ".join([*xff, peer]) if xff else peer,
        b"\r\nX-Forwarded-Proto: ",
        scheme,
        b"\r\nX-Forwarded-Host: ",
        host,
        t.extra_header,
    ]
    if upgrade:
        parts += [b"\r\nConnection: Upgrade\r\nUpgrade: ", head.get(b"upgrade") or b"", b"\r\n\r\n"]
    else:
        parts.append(KEEP_ALIVE_TAIL)
    return b"".join(parts)


def response_head(head: Head, tail: bytes) -> bytes:
    """A target's response head as the client gets it: HTTP/1.1, hop-by-hop
    headers cut, ended by `tail` (one of the *_TAIL constants)."""
    block = drop_headers(DROP_RESPONSE.sub(b"", head.block), connection_named(head.connection, RESPONSE_DROPS))
    return b"HTTP/1.1" + head.first[8:] + block + tail


def switching_head(head: Head) -> bytes:
    """A target's 101 Switching Protocols as the client gets it."""
    return b"HTTP/1.1" + head.first[8:] + DROP_101.sub(b"", head.block) + b"\r\nConnection: Upgrade\r\n\r\n"
