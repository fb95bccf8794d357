"""Who may use the grants forward proxy and with which credential: the agent
map (reloaded when its file changes), `Proxy-Authorization: Basic` checked
against it, the credential accepted only from the container it was issued to
(`peers`, on every request), and the grant header built from the stored
secret (decrypted once per version of its file)."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time

from reconciler.core.errors import FleetError
from reconciler.grants import agents as agentmap
from reconciler.grants import store
from reconciler.grants.catalogue import Rule
from reconciler.grants.forward_wire import Answer
from reconciler.grants.peers import Peers
from reconciler.net.http1 import Head

log = logging.getLogger("fleet.grants")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class Access:
    """The agent map as the proxy sees it, and the checks made with it."""

    def __init__(self, peers: Peers | None = None) -> None:
        self.peers = peers or Peers()
        self.entries: dict[str, agentmap.AgentEntry] = {}
        self._map_sig: tuple | None = None
        self._warned: dict[tuple, float] = {}
        self._secrets: dict[str, tuple[tuple, str]] = {}

    def reload(self) -> None:
        """Re-read the agent map if its file changed."""
        path = agentmap.map_path()
        try:
            st = path.stat()
            sig: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        if sig == self._map_sig:
            return
        self._map_sig = sig
        try:
            self.entries = agentmap.entries() if sig is not None else {}
        except FleetError as exc:
            log.error("grants: %s (no agent can use grants until it is fixed)", exc)
            self.entries = {}
        self.peers.forget({e.container for e in self.entries.values() if e.container})
        log.info("grants: %d agent(s) hold proxy credentials", len(self.entries))

    def authenticate(self, head: Head) -> tuple[str, agentmap.AgentEntry] | None:
        values = head.get_all(b"proxy-authorization")
        if len(values) != 1:
            return None
        scheme, _, blob = values[0].strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, _, password = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
        credential = password or user
        key = agentmap.digest(credential)
        entry = self.entries.get(key)
        return (key, entry) if entry is not None else None

    async def from_owner(self, entry: agentmap.AgentEntry, peer, head: Head | None = None) -> bool:
        """Whether this connection comes from the container `entry`'s credential
        was issued to (checked on every request: a stolen credential is refused
        from anywhere else)."""
        ip = peer[0] if peer else None
        if await self.peers.owns(entry.container, ip):
            return True
        what = "not bound to a container (issued by an older fleet? recreate the agent)" if not entry.container else \
            f"not from its container {entry.container[:12]}"
        where = f" ({head.method.decode('latin-1')} {head.target.decode('latin-1').split('?', 1)[0][:200]})" \
            if head is not None else ""
        now = time.monotonic()
        last = self._warned.get((entry.fleet, entry.agent, ip))
        if last is not None and now - last < 60:
            return False  # said within the last minute: a replay loop does not flood proxy.log
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned[(entry.fleet, entry.agent, ip)] = now
        log.warning("grants: 407 credential of %s/%s used from %s%s: %s", entry.fleet, entry.agent, ip or "?", where, what)
        return False

    def credential_header(self, rule: Rule) -> list[tuple[str, str]]:
        if not _TOKEN.match(rule.header):
            raise Answer(502, f"grant {rule.grant}: {rule.header!r} is not a valid header name")
        value = rule.render(self.secret(rule.grant))
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise Answer(502, f"grant {rule.grant}: its header value contains control characters")
        return [(rule.header, value)]

    def secret(self, name: str) -> str:
        """The grant's secret, decrypted once per version of its file."""
        path = store.grant_path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._secrets.pop(name, None)
            raise FleetError(f"grant {name} is not stored; run `fleet grant set {name}`") from None
        sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        hit = self._secrets.get(name)
        if hit is not None and hit[0] == sig:
            return hit[1]
        value = store.get_secret(name)
        self._secrets[name] = (sig, value)
        return value
