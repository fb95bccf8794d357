"""TLS contexts for both proxies: the server side (leaves picked by SNI) and
the upstream side (verified connections to targets and real hosts).

- `server_context()`: a TLS 1.2+ server context offering HTTP/1.1 over ALPN;
  `load_chain(ctx, chain_pem, key_pem)` puts a certificate chain and key in it
  from memory; `with_sni(base, leaf_for)` makes `base` pick, per handshake, the
  context `leaf_for(server_name)` returns (a failure there never breaks a
  handshake: the client gets `base`'s certificate and its own check decides).
- `upstream_context(cafile)`: verification on (system CAs, plus `cafile`, the
  `FLEET_UPSTREAM_CA` bundle), hostname checked, HTTP/1.1 offered over ALPN.
  `UpstreamTLS` builds one lazily and keeps it (contexts are costly to make and
  cache sessions).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Callable, Sequence

HTTP1_ALPN: tuple[str, ...] = ("http/1.1",)


def server_context(alpn: Sequence[str] | None = HTTP1_ALPN) -> ssl.SSLContext:
    """A server context: TLS 1.2 at least, `alpn` offered (None: no ALPN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate chain (leaf first) and its key from memory. ssl only
    loads from files: a private 0600 temp file, deleted at once."""
    fd, path = tempfile.mkstemp(prefix="fleet-leaf-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem + chain_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def with_sni(base: ssl.SSLContext, leaf_for: Callable[[str], ssl.SSLContext | None]) -> ssl.SSLContext:
    """`base`, answering each handshake that names a server with the context
    `leaf_for(name)` returns; None, an exception, or no SNI at all: `base` itself."""

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if not server_name:
            return None
        try:
            ctx = leaf_for(server_name)
        except Exception:  # never break a handshake over a cache or minting error
            return None
        if ctx is not None:
            sslobj.context = ctx
        return None

    base.sni_callback = pick
    return base


def upstream_context(cafile: str | None = None, alpn: Sequence[str] | None = HTTP1_ALPN) -> ssl.SSLContext:
    """A client context that verifies the target against the system CAs and
    `cafile` (when given), hostname included, offering `alpn`."""
    ctx = ssl.create_default_context()
    if cafile:
        ctx.load_verify_locations(cafile=cafile)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class UpstreamTLS:
    """One upstream context for `cafile`, made on first use and kept."""

    __slots__ = ("cafile", "_ctx")

    def __init__(self, cafile: str | None = None) -> None:
        self.cafile = cafile
        self._ctx: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        if self._ctx is None:
            self._ctx = upstream_context(self.cafile)
        return self._ctx
