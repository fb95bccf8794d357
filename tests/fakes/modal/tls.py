"""TLS for the fake's tunnels: a private CA and a TLS-terminating TCP forwarder.

Modal's `encrypted_ports` are TLS-terminated tunnels (`Tunnel.url` is `https://host:port`).
The fake makes each one real: Docker publishes the container port on 127.0.0.1, and a
forwarder here accepts TLS on another 127.0.0.1 port (certificate for `127.0.0.1` and
`localhost`, issued by a CA generated at start) and pipes plain TCP to the published
port. Clients verify it by trusting the CA file (`FLEET_UPSTREAM_CA`).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class TunnelCA:
    """A throwaway CA and one server certificate for 127.0.0.1 / localhost."""

    def __init__(self, directory: Path, label: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fleet fake Modal CA {label}")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.cert_path = directory / "tunnel-cert.pem"
        self.key_path = directory / "tunnel-key.pem"
        self.ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_path.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.key_path.chmod(0o600)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_path, self.key_path)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this CA (for tests)."""
        return ssl.create_default_context(cafile=str(self.ca_path))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError, ssl.SSLError):
        pass


class TlsForwarder:
    """Accepts TLS on 127.0.0.1:<port> and forwards plain TCP to 127.0.0.1:<target_port>.

    `on_open`/`on_close` let the owner count open connections (idle timeouts).
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        target_port: int,
        on_open: Callable[[], None] = lambda: None,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self._ctx = ctx
        self.target_port = target_port
        self._on_open = on_open
        self._on_close = on_close
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> int:
        self._server = await asyncio.start_server(self._handle, host, 0, ssl=self._ctx)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._conns.add(client_w)
        self._on_open()
        upstream_w: asyncio.StreamWriter | None = None
        pipes: list[asyncio.Future[None]] = []
        try:
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), timeout=10
            )
            self._conns.add(upstream_w)
            to_client = asyncio.ensure_future(_pipe(upstream_r, client_w))
            to_upstream = asyncio.ensure_future(_pipe(client_r, upstream_w))
            pipes = [to_client, to_upstream]
            done, _ = await asyncio.wait({to_client, to_upstream}, return_when=asyncio.FIRST_COMPLETED)
            if to_client not in done:
                # The client finished sending (its EOF went upstream as a half-close); give the
                # upstream time to answer and close. TLS cannot half-close towards the client,
                # so when the upstream side ends, the whole connection ends.
                await asyncio.wait({to_client}, timeout=60)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
        finally:
            for t in pipes:
                t.cancel()
            for w in (client_w, upstream_w):
                if w is not None:
                    self._conns.discard(w)
                    w.close()
            self._on_close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            await self._server.wait_closed()
            self._server = None
