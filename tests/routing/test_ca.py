"""The local CA: constraints, file modes, leaves by SNI, refusals."""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from reconciler.core.errors import FleetError
from reconciler.net.ca import CertificateAuthority, NameNotPermitted, routing_ca

from .helpers import WAIT


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str | None) -> dict:
    """A real TLS handshake over loopback; returns the peer certificate the client saw."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = ls.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with socket.create_connection(ls.getsockname(), WAIT) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=name) as s:
                assert s.recv(2) == b"ok"
                return s.getpeercert()
    finally:
        t.join(WAIT)
        ls.close()


def test_ca_files_modes_and_constraints(ca, fleet_home):
    assert ca.cert_path == fleet_home / "ca" / "ca.crt"
    assert stat.S_IMODE(os.stat(ca.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ca.cert_path).st_mode) == 0o644
    cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    nc = cert.extensions.get_extension_for_oid(ExtensionOID.NAME_CONSTRAINTS)
    assert nc.critical
    dns = {n.value for n in nc.value.permitted_subtrees if isinstance(n, x509.DNSName)}
    assert dns == {"localhost", ".localhost"}
    # e-mail and URI names only under the reserved `invalid`; every IP address excluded
    others = {(type(n).__name__, n.value) for n in nc.value.permitted_subtrees if not isinstance(n, x509.DNSName)}
    assert others == {("RFC822Name", "invalid"), ("UniformResourceIdentifier", ".invalid")}
    assert {str(n.value) for n in nc.value.excluded_subtrees} == {"0.0.0.0/0", "::/0"}
    bc = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0


def test_ca_is_created_once_and_reused(ca):
    again = routing_ca().ensure()
    assert again.certificate.serial_number == ca.certificate.serial_number


def test_key_readable_by_others_is_refused(ca):
    os.chmod(ca.key_path, 0o644)
    with pytest.raises(FleetError, match=r"readable by other users.*chmod 600"):
        routing_ca().ensure()
    os.chmod(ca.key_path, 0o600)
    routing_ca().ensure()


@pytest.mark.parametrize("name", ["example.com", "localhost.evil.com", "evil-localhost", "localhost.", "a..localhost", ""])
def test_leaf_refused_outside_localhost(ca, name):
    if name == "localhost.":  # a final dot is the same name: allowed
        ca.mint_leaf(name)
        return
    with pytest.raises(NameNotPermitted):
        ca.mint_leaf(name)
    assert not ca.permits(name)


def test_leaf_verifies_with_hostname_check(ca):
    server = ca.server_context()
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    for name in ("web.dark-mode.localhost", "WEB.Checkout.LOCALHOST", "localhost"):
        peer = _handshake(server, client, name)
        assert ("DNS", name.lower()) in peer["subjectAltName"]
    # a name the CA may not certify: the client's own check refuses the default leaf
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|not valid"):
        _handshake(server, client, "example.com")


def test_leaf_is_ecdsa_p256_server_auth(ca):
    cert_pem, key_pem = ca.mint_leaf("api.agent.localhost")
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.issuer == ca.certificate.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.agent.localhost"]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_name_constraints_are_enforced_by_openssl(ca, tmp_path):
    """Even a certificate signed with the CA key for another name fails to verify:
    trusting this CA cannot endanger other sites."""
    key = serialization.load_pem_private_key(ca.key_path.read_bytes(), None)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    rogue = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")]))
        .issuer_name(ca.certificate.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "rogue.pem"
    pem.write_bytes(
        leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + rogue.public_bytes(serialization.Encoding.PEM)
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pem)
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)name constraint|permitted"):
        _handshake(server, client, "example.com")


def test_leaf_cache_is_bounded(fleet_home):
    small = CertificateAuthority(fleet_home / "small-ca", "small", permitted_names=["localhost"], cache_size=3)
    ctxs = [small.leaf_context(f"s{i}.localhost") for i in range(5)]
    assert small.cached_names() == ["s2.localhost", "s3.localhost", "s4.localhost"]
    assert small.leaf_context("s4.localhost") is ctxs[4]  # a hit returns the cached context
    assert small.leaf_context("s0.localhost") is not ctxs[0]  # evicted, minted again


def test_unconstrained_ca_for_grants(tmp_path):
    """The same code serves the grants interception CA: another directory, no constraints."""
    grants = CertificateAuthority(tmp_path / "grants-ca", "fleet grants CA", permitted_names=None)
    grants.ensure()
    cert = grants.certificate
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.NAME_CONSTRAINTS)
    client = ssl.create_default_context(cafile=str(grants.cert_path))
    peer = _handshake(grants.server_context(), client, "api.github.com")
    assert ("DNS", "api.github.com") in peer["subjectAltName"]
