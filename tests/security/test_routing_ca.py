"""The routing CA cannot vouch for anything but localhost names: not IP
addresses, not e-mail or URI names, even with its own key. An older CA that
could is replaced once, saying so."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from reconciler.grants.trust import interception_ca
from reconciler.routing import daemon
from reconciler.net.ca import NameNotPermitted, routing_ca
from reconciler.routing.table import Route, set_fleet_routes
from tests.conftest import run_fleet
from tests.routing.conftest import backends, port  # noqa: F401  (fixtures)
from tests.routing.helpers import wait_until

NOW = dt.datetime.now(dt.timezone.utc)


def forge_leaf(ca_dir: Path, sans: list[x509.GeneralName]) -> x509.Certificate:
    """A leaf signed with the CA's own key, as someone holding ca.key would make it."""
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca_cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def verify_py(ca_dir: Path, leaf: x509.Certificate, subject: x509.GeneralName) -> bool:
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    verifier = PolicyBuilder().store(Store([ca_cert])).build_server_verifier(subject)
    try:
        verifier.verify(leaf, [])
        return True
    except VerificationError:
        return False


def verify_openssl(ca_dir: Path, leaf: x509.Certificate, tmp_path: Path, *check: str) -> bool:
    path = tmp_path / "leaf.pem"
    path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    r = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(ca_dir / "ca.crt"), *check, str(path)],
        capture_output=True, text=True, timeout=30,
    )
    return r.returncode == 0


IP = x509.IPAddress


@pytest.mark.parametrize(
    "sans, subject, check",
    [
        ([IP(ipaddress.ip_address("8.8.8.8"))], IP(ipaddress.ip_address("8.8.8.8")), ["-verify_ip", "8.8.8.8"]),
        ([IP(ipaddress.ip_address("127.0.0.1"))], IP(ipaddress.ip_address("127.0.0.1")), ["-verify_ip", "127.0.0.1"]),
        ([IP(ipaddress.ip_address("2001:4860::8888"))], IP(ipaddress.ip_address("2001:4860::8888")), ["-verify_ip", "2001:4860::8888"]),
        ([x509.DNSName("web.a.localhost"), IP(ipaddress.ip_address("8.8.8.8"))], IP(ipaddress.ip_address("8.8.8.8")), ["-verify_ip", "8.8.8.8"]),
        ([x509.DNSName("web.a.localhost"), x509.RFC822Name("ceo@example.com")], x509.DNSName("web.a.localhost"), []),
        ([x509.DNSName("web.a.localhost"), x509.UniformResourceIdentifier("https://example.com/")], x509.DNSName("web.a.localhost"), []),
    ],
    ids=["ipv4", "loopback", "ipv6", "dns+ip", "email", "uri"],
)
def test_leaf_the_routing_ca_key_signs_for_other_name_types_fails(fleet_home, tmp_path, sans, subject, check):
    ca = routing_ca().ensure()
    leaf = forge_leaf(ca.directory, sans)
    assert not verify_py(ca.directory, leaf, subject)
    assert not verify_openssl(ca.directory, leaf, tmp_path, *check)


def test_localhost_leaf_still_verifies_and_ip_leaves_are_never_minted(fleet_home, tmp_path):
    ca = routing_ca().ensure()
    good = forge_leaf(ca.directory, [x509.DNSName("web.a.localhost")])
    assert verify_py(ca.directory, good, x509.DNSName("web.a.localhost"))
    assert verify_openssl(ca.directory, good, tmp_path, "-verify_hostname", "web.a.localhost")
    minted = x509.load_pem_x509_certificate(ca.mint_leaf("web.a.localhost")[0])
    assert verify_py(ca.directory, minted, x509.DNSName("web.a.localhost"))
    for name in ("8.8.8.8", "127.0.0.1", "::1", "[::ffff:127.0.0.1]"):
        assert not ca.permits(name)
        with pytest.raises(NameNotPermitted):
            ca.mint_leaf(name)


def test_interception_ca_still_mints_ip_literal_leaves(fleet_home):
    """The grants interception CA is unconstrained: a grant for an IP-literal host
    (`hosts: ["10.1.2.3:443"]`, IPv6 too) still gets a leaf that verifies."""
    ca = interception_ca().ensure()
    for name, ip in (("10.1.2.3", "10.1.2.3"), ("[2001:db8::1]", "2001:db8::1"), ("2001:DB8::1", "2001:db8::1")):
        ctx = ca.leaf_context(name)
        assert isinstance(ctx, ssl.SSLContext)
        leaf = x509.load_pem_x509_certificate(ca.mint_leaf(name)[0])
        assert verify_py(ca.directory, leaf, x509.IPAddress(ipaddress.ip_address(ip)))


# -- replacing a CA made by an earlier fleet --------------------------------------------------


def make_old_style_ca(ca_dir: Path) -> x509.Certificate:
    """The routing CA as fleet made it before: DNS constraints only."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet local routing CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.NameConstraints([x509.DNSName("localhost"), x509.DNSName(".localhost")], None), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_path = ca_dir / "ca.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    (ca_dir / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def test_old_ca_is_replaced_once_with_a_line_saying_to_trust_it_again(fleet_home, tmp_path):
    old = make_old_style_ca(fleet_home / "ca")
    ip_leaf = forge_leaf(fleet_home / "ca", [IP(ipaddress.ip_address("8.8.8.8"))])
    assert verify_py(fleet_home / "ca", ip_leaf, IP(ipaddress.ip_address("8.8.8.8")))  # what the old CA allowed

    first = run_fleet("ca", "path")
    assert first.code == 0, first.text
    assert first.out.strip() == str(fleet_home / "ca" / "ca.crt")
    assert first.err.count("fleet ca trust") == 1, first.err
    new = x509.load_pem_x509_certificate((fleet_home / "ca" / "ca.crt").read_bytes())
    assert new.public_key().public_numbers() != old.public_key().public_numbers()  # a new key, too
    assert not verify_py(fleet_home / "ca", forge_leaf(fleet_home / "ca", [IP(ipaddress.ip_address("8.8.8.8"))]),
                         IP(ipaddress.ip_address("8.8.8.8")))

    second = run_fleet("ca", "path")
    assert second.code == 0 and "fleet ca trust" not in second.text, second.text
    assert (fleet_home / "ca" / "ca.crt").read_bytes() == new.public_bytes(serialization.Encoding.PEM)


def test_running_proxy_moves_to_a_replaced_ca(fleet_home, backends, port):
    a = backends("A")
    set_fleet_routes("app", [port], [Route(agent="x", service="web", container_port=3000, target=a.url)])
    try:
        daemon.start()
        make_old_style_ca(fleet_home / "ca")  # an old CA appears under the running proxy

        def handshake_with_current_ca() -> bool:
            ctx = ssl.create_default_context(cafile=str(fleet_home / "ca" / "ca.crt"))
            try:
                with socket.create_connection(("127.0.0.1", port), 5) as raw:
                    with ctx.wrap_socket(raw, server_hostname="x.localhost"):
                        return True
            except (ssl.SSLError, OSError):
                return False

        wait_until(handshake_with_current_ca, what="the proxy serving leaves from the replaced CA")
        cert = x509.load_pem_x509_certificate((fleet_home / "ca" / "ca.crt").read_bytes())
        assert not routing_ca().outdated(cert)
        assert daemon.log_path().read_text().count("fleet ca trust") == 1
    finally:
        daemon.stop()
