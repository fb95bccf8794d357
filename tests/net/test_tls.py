"""net.tls: real TLS handshakes over loopback between the contexts it makes,
with leaves minted by a CA in a temp directory."""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile

import pytest

from reconciler.net import tls
from reconciler.net.ca import CertificateAuthority


@pytest.fixture
def ca(tmp_path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path / "ca", "test CA", permitted_names=("localhost", ".localhost")).ensure()


def leaf_context(ca: CertificateAuthority, name: str) -> ssl.SSLContext:
    cert, key = ca.mint_leaf(name)
    ctx = tls.server_context()
    tls.load_chain(ctx, cert + ca.cert_pem(), key)
    return ctx


async def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str | None) -> tuple[dict, str | None]:
    """(the certificate the client saw, the ALPN protocol chosen)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=sni), 10
        )
        assert await reader.read() == b"hi"
        sslobj = writer.get_extra_info("ssl_object")
        cert = sslobj.getpeercert()
        alpn = sslobj.selected_alpn_protocol()
        writer.close()
        return cert, alpn
    finally:
        server.close()
        await server.wait_closed()


def names(cert: dict) -> set[str]:
    return {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}


def test_upstream_context_verifies_against_the_extra_ca_and_offers_http1(ca):
    ctx = tls.upstream_context(str(ca.cert_path))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    cert, alpn = asyncio.run(handshake(leaf_context(ca, "a.localhost"), ctx, "a.localhost"))
    assert names(cert) == {"a.localhost"}
    assert alpn == "http/1.1"


def test_upstream_context_without_the_ca_refuses_the_target(ca):
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(handshake(leaf_context(ca, "a.localhost"), tls.upstream_context(), "a.localhost"))


def test_upstream_context_checks_the_hostname(ca):
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(handshake(leaf_context(ca, "a.localhost"), tls.upstream_context(str(ca.cert_path)), "b.localhost"))


def test_with_sni_picks_the_leaf_by_name_and_falls_back_to_the_base(ca):
    leaves = {"b.localhost": leaf_context(ca, "b.localhost")}
    asked: list[str] = []

    def leaf_for(name: str) -> ssl.SSLContext | None:
        asked.append(name)
        if name == "boom.localhost":
            raise RuntimeError("minting failed")
        return leaves.get(name)

    server = tls.with_sni(leaf_context(ca, "a.localhost"), leaf_for)
    client = tls.upstream_context(str(ca.cert_path))
    cert, _ = asyncio.run(handshake(server, client, "b.localhost"))
    assert names(cert) == {"b.localhost"}

    lax = tls.upstream_context(str(ca.cert_path))
    lax.check_hostname = False  # still verified against the CA: shows which leaf was served
    for sni in ("unknown.localhost", "boom.localhost"):  # no leaf, or a failing lookup: the base, never a broken handshake
        cert, _ = asyncio.run(handshake(server, lax, sni))
        assert names(cert) == {"a.localhost"}
    cert, _ = asyncio.run(handshake(server, lax, None))  # no SNI at all
    assert names(cert) == {"a.localhost"}
    assert asked == ["b.localhost", "unknown.localhost", "boom.localhost"]


def test_server_context_settings():
    ctx = tls.server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE  # a server: clients bring no certificate
    none = tls.server_context(alpn=None)
    assert none.minimum_version == ssl.TLSVersion.TLSv1_2


def test_load_chain_leaves_no_key_on_disk(ca, tmp_path, monkeypatch):
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    cert, key = ca.mint_leaf("a.localhost")
    tls.load_chain(tls.server_context(), cert, key)
    assert os.listdir(private) == []
    with pytest.raises(ssl.SSLError):
        tls.load_chain(tls.server_context(), cert, b"not a key")
    assert os.listdir(private) == []


def test_upstream_tls_builds_once_and_keeps_it(ca):
    holder = tls.UpstreamTLS(str(ca.cert_path))
    first = holder.context()
    assert holder.context() is first
    cert, _ = asyncio.run(handshake(leaf_context(ca, "a.localhost"), first, "a.localhost"))
    assert names(cert) == {"a.localhost"}
