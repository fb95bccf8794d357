"""The interception CA and the CA bundle agents with grants trust.

The forward proxy presents, for each host it injects credentials into, a leaf
certificate signed by fleet's interception CA (`$FLEET_HOME/grants-ca/`). That
CA is a different one from the routing CA (which is name-constrained to
`localhost`): it has to certify api.github.com and friends, so it is trusted
only inside agent containers, never on this machine.

Agents get `$FLEET_HOME/grants-ca/bundle.crt` (this machine's system CAs, the
interception CA and the routing CA) bind-mounted read-only at
`/etc/fleet/ca-bundle.crt`; agents without grants get
`$FLEET_HOME/agentnet/ca-bundle.crt` there (system CAs and the routing CA). The
bundle is rewritten in place (same inode) when its content changes, so running
containers see the new content through their bind mount; the space is reserved
before a byte changes, so a full or read-only FLEET_HOME never leaves it cut.
"""

from __future__ import annotations

import errno
import os
import ssl
from pathlib import Path

from typing import TYPE_CHECKING

from reconciler.core.errors import FleetError
from reconciler.state.home import fleet_home

if TYPE_CHECKING:  # loaded when a CA is used: writing an agent's bundle needs no crypto
    from reconciler.net.ca import CertificateAuthority

CONTAINER_BUNDLE = "/etc/fleet/ca-bundle.crt"


def ca_dir() -> Path:
    return fleet_home() / "grants-ca"


def interception_ca() -> "CertificateAuthority":
    """Unconstrained (it certifies public API hosts), with its own directory."""
    from reconciler.net.ca import CertificateAuthority

    return CertificateAuthority(ca_dir(), "fleet grants interception CA", permitted_names=None)


def bundle_path() -> Path:
    return ca_dir() / "bundle.crt"


def system_cas() -> bytes:
    """This machine's trusted CAs (PEM), or certifi's when the system has none."""
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"]
    for c in candidates:
        if c and os.path.isfile(c):
            try:
                data = Path(c).read_bytes()
            except OSError:
                continue
            if b"BEGIN CERTIFICATE" in data:
                return data
    try:
        import certifi

        return Path(certifi.where()).read_bytes()
    except Exception:
        return b""


def _routing_ca_pem() -> bytes:
    """The routing CA (name-constrained to localhost): every agent trusts it, so
    `https://<svc>.<agent>.localhost:<port>` verifies inside containers too."""
    head = b"\n# fleet routing CA (localhost names only)\n"
    cert, key = fleet_home() / "ca" / "ca.crt", fleet_home() / "ca" / "ca.key"  # routing.ca.routing_ca_dir()
    if cert.exists() and key.exists():
        try:
            return head + cert.read_bytes()
        except OSError:
            pass
    from reconciler.net.ca import routing_ca

    return head + routing_ca().ensure().cert_pem()


def ensure_bundle() -> Path:
    """The bundle file for agents with grants (system CAs, the interception CA,
    the routing CA), created or refreshed; returns its path."""
    ca = interception_ca().ensure()
    system = system_cas()
    content = system.rstrip(b"\n") + b"\n\n# fleet grants interception CA\n" + ca.cert_pem()
    if not system:
        content = b"# fleet grants interception CA (no system CAs found on this machine)\n" + ca.cert_pem()
    return write_in_place(bundle_path(), content + _routing_ca_pem())


def agent_bundle_path() -> Path:
    return fleet_home() / "agentnet" / "ca-bundle.crt"


def ensure_agent_bundle() -> Path:
    """The bundle for agents without grants: system CAs plus the routing CA."""
    system = system_cas()
    head = system.rstrip(b"\n") + b"\n" if system else b"# no system CAs found on this machine\n"
    path = agent_bundle_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_in_place(path, head + _routing_ca_pem())


def write_in_place(path: Path, content: bytes) -> Path:
    """Write `content` to `path` keeping its inode (a bind mount follows the
    inode, so running containers see the new content); no write when equal."""
    try:
        if path.exists() and path.read_bytes() == content:
            return path
        rewrite_in_place(path, content)
    except OSError as exc:
        raise FleetError(f"cannot write {path} under FLEET_HOME: {exc.strerror or exc}") from None
    return path


def rewrite_in_place(path: Path, content: bytes) -> None:
    """Replace the bytes of `path` keeping its inode: running containers
    bind-mount this very file, and a rename would leave them the old one.

    Never leaves a truncated bundle: the space is reserved first
    (posix_fallocate fails with ENOSPC before a byte changes), the new bytes
    are written and flushed, and only then is the tail cut. A read-only or
    full FLEET_HOME leaves the old bundle whole. A crash in the middle of the
    one write is repaired by the next run (the content is compared first)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if len(content) > os.fstat(fd).st_size:
            try:
                os.posix_fallocate(fd, 0, len(content))
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # no fallocate on this filesystem: at least extend the file before touching old bytes
                os.pwrite(fd, content[-1:], len(content) - 1)
        view = memoryview(content)
        done = 0
        while done < len(content):
            done += os.pwrite(fd, view[done:], done)
        os.fsync(fd)
        os.ftruncate(fd, len(content))
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
