"""A local certificate authority that mints TLS leaf certificates on the fly.

The routing proxy serves `https://<service>.<agent>.localhost`; a browser trusts
it once the user trusts this CA. The routing CA is name-constrained (critical
NameConstraints: DNS `localhost` and `.localhost` permitted, every IPv4 and IPv6
address excluded, e-mail and URI names shut out), so trusting it cannot endanger
any other site or address. A routing CA made by an earlier fleet without those
exclusions is replaced once, with a line saying to trust it again. The same class, with `permitted_names=None` and its own
directory, serves as the grants interception CA (a different CA, other names).

Files: `<dir>/ca.crt` (0644) and `<dir>/ca.key` (0600; a key readable by group
or others is refused). Leaf certificates are ECDSA P-256, minted per SNI name,
kept in memory only, in an LRU cache with a bound.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import re
import ssl
import stat
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reconciler.core.errors import FleetError
from reconciler.net import tls
from reconciler.state.home import fleet_home, write_atomic

ROUTING_PERMITTED = ("localhost", ".localhost")
# What a constrained CA also shuts out: every IP address (excluded subtrees), and
# e-mail addresses and URIs (permitted only under the reserved `invalid` name,
# RFC 2606). Directory names are left alone: a leaf's subject is one.
EXCLUDED_NETWORKS = ("0.0.0.0/0", "::/0")
NO_EMAIL = "invalid"
NO_URI = ".invalid"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=397)  # the most any browser accepts
LEAF_RENEW_BEFORE = dt.timedelta(days=2)
DEFAULT_CACHE_SIZE = 256

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class NameNotPermitted(FleetError):
    """A leaf was asked for a name this CA may not certify."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ip_literal(name: str) -> str | None:
    """The canonical form of an IPv4 or IPv6 address (brackets allowed), or None."""
    text = name.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot (an IP address: its canonical form); raises
    NameNotPermitted for a malformed name."""
    ip = ip_literal(name)
    if ip is not None:
        return ip
    n = name.strip().lower().rstrip(".")
    if not n or len(n) > 253:
        raise NameNotPermitted(f"not a valid DNS name: {name!r}")
    labels = n.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    if not labels or not all(_LABEL.match(label) for label in labels):
        raise NameNotPermitted(f"not a valid DNS name: {name!r}")
    return n


def name_permitted(name: str, permitted: Sequence[str] | None) -> bool:
    """RFC 5280 DNS name constraints: `example` allows example and its subdomains,
    `.example` allows only subdomains. `None` allows every name. A constrained
    CA never certifies an IP address."""
    if permitted is None:
        return True
    if ip_literal(name) is not None:
        return False
    for p in permitted:
        p = p.lower()
        if p.startswith("."):
            if name.endswith(p):
                return True
        elif name == p or name.endswith("." + p):
            return True
    return False


class CertificateAuthority:
    """A CA kept in `directory`, created on first use.

    `permitted_names` (e.g. `["localhost", ".localhost"]`) becomes a critical
    NameConstraints extension, and leaves are refused for other names; `None`
    means unconstrained (the grants interception CA).
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        permitted_names: Sequence[str] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        alpn: Sequence[str] | None = ("http/1.1",),
    ) -> None:
        self.directory = Path(directory)
        self.name = name
        self.permitted_names = tuple(permitted_names) if permitted_names is not None else None
        self.cache_size = cache_size
        self._lock = threading.RLock()
        self._cert: x509.Certificate | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._leaf_key: ec.EllipticCurvePrivateKey | None = None
        self._leaves: OrderedDict[str, tuple[ssl.SSLContext, dt.datetime]] = OrderedDict()
        self._alpn: tuple[str, ...] | None = tuple(alpn) if alpn else None

    # -- files ---------------------------------------------------------------

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    def exists(self) -> bool:
        return self.cert_path.exists() and self.key_path.exists()

    def ensure(self) -> "CertificateAuthority":
        """Load the CA, creating it if it does not exist yet. Idempotent, safe
        against a concurrent creator (an flock on `<dir>/.lock`)."""
        with self._lock:
            if self._cert is not None:
                return self
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o755)  # ca.crt is public; ca.key is 0600
                with open(self.directory / ".lock", "a+") as lockf:
                    fcntl.flock(lockf, fcntl.LOCK_EX)
                    if not self.exists():
                        self._create()
                    else:
                        self._replace_outdated()
                    self._load()
            except OSError as exc:
                raise FleetError(f"cannot use the CA in {self.directory}: {exc.strerror or exc}") from exc
            return self

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, self.name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleet (local development CA)"),
            ]
        )
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
        )
        constraints = self.name_constraints()
        if constraints is not None:
            builder = builder.add_extension(constraints, critical=True)
        cert = builder.sign(key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(self.key_path, key_pem, 0o600)
        write_atomic(self.cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def name_constraints(self) -> x509.NameConstraints | None:
        """The critical NameConstraints a constrained CA carries: its DNS names
        permitted, no e-mail or URI names, every IPv4 and IPv6 address excluded."""
        if self.permitted_names is None:
            return None
        permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in self.permitted_names]
        permitted += [x509.RFC822Name(NO_EMAIL), x509.UniformResourceIdentifier(NO_URI)]
        excluded: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_network(n)) for n in EXCLUDED_NETWORKS]
        return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)

    def outdated(self, cert: x509.Certificate) -> bool:
        """A constrained CA made by an earlier fleet, whose constraints lack what
        `name_constraints()` now asks for (it could vouch for IP addresses)."""
        wanted = self.name_constraints()
        if wanted is None:
            return False
        try:
            have = cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return True
        return set(have.permitted_subtrees or ()) != set(wanted.permitted_subtrees or ()) or set(
            have.excluded_subtrees or ()
        ) != set(wanted.excluded_subtrees or ())

    def _replace_outdated(self) -> None:
        """Called under the CA's lock: an outdated CA is replaced (new key), once."""
        try:
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except ValueError:
            return  # _load says what is wrong
        if not self.outdated(cert):
            return
        self._create()
        print(
            f"fleet: replaced the {self.name} in {self.directory}: the old one could vouch for IP addresses; "
            f"run `fleet ca trust` again (and remove the old one from your trust stores)",
            file=sys.stderr,
            flush=True,
        )

    def _load(self) -> None:
        mode = stat.S_IMODE(os.stat(self.key_path).st_mode)
        if mode & 0o077:
            raise FleetError(
                f"{self.key_path} is readable by other users (mode {mode:04o}); "
                f"run `chmod 600 {self.key_path}` (or delete {self.directory} to make a new CA)"
            )
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except ValueError as exc:
            raise FleetError(f"the CA in {self.directory} is unreadable ({exc}); delete it to make a new one") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise FleetError(f"{self.key_path}: expected an EC key")
        public = cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.public_numbers() != key.public_key().public_numbers():
            raise FleetError(f"{self.cert_path} does not match {self.key_path}; delete {self.directory} to make a new CA")
        self._key = key
        self._cert = cert
        # One key for every leaf: minting is then a signature, not a key generation.
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def certificate(self) -> x509.Certificate:
        self.ensure()
        assert self._cert is not None
        return self._cert

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # -- leaves --------------------------------------------------------------

    def permits(self, name: str) -> bool:
        try:
            n = normalize_name(name)
        except NameNotPermitted:
            return False
        return name_permitted(n, self.permitted_names)

    def mint_leaf(self, name: str) -> tuple[bytes, bytes]:
        """A fresh leaf certificate for `name`: (cert PEM, key PEM).
        Raises NameNotPermitted outside the CA's permitted names."""
        n = normalize_name(name)
        if not name_permitted(n, self.permitted_names):
            allowed = ", ".join(self.permitted_names or ())
            raise NameNotPermitted(f"{self.name} may only certify {allowed}; refused {name!r}")
        self.ensure()
        assert self._key is not None and self._cert is not None and self._leaf_key is not None
        now = _now()
        leaf_pub = self._leaf_key.public_key()
        san: list[x509.GeneralName] = [x509.DNSName(n)]
        if ip_literal(n) is not None:
            san = [x509.IPAddress(ipaddress.ip_address(n))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(leaf_pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(min(now + LEAF_VALIDITY, self._cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_pub), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem

    def leaf_context(self, name: str) -> ssl.SSLContext:
        """A server SSLContext holding the leaf for `name` (from the LRU cache,
        minted on a miss or when the cached leaf nears expiry)."""
        n = normalize_name(name)
        with self._lock:
            hit = self._leaves.get(n)
            if hit is not None and hit[1] - _now() > LEAF_RENEW_BEFORE:
                self._leaves.move_to_end(n)
                return hit[0]
        cert_pem, key_pem = self.mint_leaf(n)
        ctx = tls.server_context(self._alpn)
        tls.load_chain(ctx, cert_pem + self.cert_pem(), key_pem)
        expires = _now() + LEAF_VALIDITY
        with self._lock:
            self._leaves[n] = (ctx, expires)
            self._leaves.move_to_end(n)
            while len(self._leaves) > self.cache_size:
                self._leaves.popitem(last=False)
        return ctx

    def cached_names(self) -> list[str]:
        with self._lock:
            return list(self._leaves)

    def server_context(self, default_name: str = "localhost") -> ssl.SSLContext:
        """The SSLContext a TLS server listens with: it picks the leaf by SNI.

        A client sending no SNI, or a name this CA may not certify, gets the
        leaf for `default_name` (its own name check then fails, unless it
        skips verification: it then reads the proxy's refusal in plain words).
        """
        self.ensure()
        base = self.leaf_context(default_name)
        return tls.with_sni(base, lambda name: self.leaf_context(name) if self.permits(name) else None)


def routing_ca_dir() -> Path:
    return fleet_home() / "ca"


def routing_ca() -> CertificateAuthority:
    """The routing CA under `$FLEET_HOME/ca/`, constrained to localhost names."""
    return CertificateAuthority(routing_ca_dir(), "fleet local routing CA", permitted_names=ROUTING_PERMITTED)
