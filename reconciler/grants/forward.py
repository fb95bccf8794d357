"""The forward proxy that puts credentials on agents' requests (asyncio, stdlib).

Agents with grants send their traffic here (`HTTPS_PROXY=http://fleet:<their
credential>@fleet-proxy:<port>`). For every request the caller is identified by
its per-agent credential (`Proxy-Authorization: Basic`), accepted only on a
connection from the container it was issued to (`peers`, checked on every
request); otherwise the answer is 407. Then:

- `CONNECT host:port` to a host one of the caller's grants covers: the proxy
  answers 200, terminates TLS with a leaf for that host signed by the
  interception CA, and for each request inside sets the grant's header
  (replacing whatever placeholder the client sent) before forwarding it over a
  verified TLS connection to the real host. Keep-alive, chunked bodies, 1xx
  responses and upgrades pass through.
- every other `CONNECT`: a byte tunnel, untouched.
- plain `http://` requests: forwarded, never with a credential (a secret is
  only ever sent over TLS).

TRACE and TRACK are answered 405, never forwarded (they would echo the
injected header back to the agent).

Upstream names resolve through `FLEET_RESOLVE` (`host=address[:port],...`, like
curl's `--resolve`) first, then DNS, once; every resolved address is vetted
(`destinations`: loopback, unspecified, link-local, this machine's addresses and
its bridge networks, in any spelling) and the proxy connects to the vetted
address itself. Only `FLEET_RESOLVE` entries may point at this machine.
Upstream TLS trusts the system CAs plus `FLEET_UPSTREAM_CA`.

It listens on the Docker bridge gateway (172.17.0.1 usually; the address
containers reach as `fleet-proxy`), only while some agent holds a credential,
on `FLEET_GRANTS_PORT`, else the port recorded in `$FLEET_HOME/grants/port`,
else 3128 (or, when 3128 is taken, a free port that is then recorded). Its
state (address or error) is in `$FLEET_HOME/grants/forward.json`. It runs inside
the fleet proxy process (`reconciler.routing.daemon`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from reconciler.core.errors import FleetError
from reconciler.state.home import fleet_home, write_atomic
from reconciler.net.ca import CertificateAuthority
from reconciler.net.http1 import UNTIL_CLOSE, HttpError, parse_request_head, parse_response_head, request_framing, response_framing
from reconciler.grants import agents as agentmap
from reconciler.grants import destinations, netlog, store
from reconciler.net.limits import SourceLimiter
from reconciler.grants.peers import Peers
from reconciler.grants.streams import copy_body, pipe_both
from reconciler.grants.catalogue import Rule, pick
from reconciler.grants.trust import interception_ca

log = logging.getLogger("fleet.grants")

DEFAULT_PORT = 3128
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 407: "Proxy Authentication Required",
    408: "Request Timeout", 431: "Request Header Fields Too Large", 501: "Not Implemented",
    502: "Bad Gateway", 504: "Gateway Timeout",
}


def state_path() -> Path:
    return fleet_home() / "grants" / "forward.json"


def port_path() -> Path:
    return fleet_home() / "grants" / "port"


def read_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, ValueError):
        return None


# -- configuration -------------------------------------------------------------------------


def parse_resolve(text: str | None) -> dict[str, tuple[str, int | None]]:
    """`api.github.com=127.0.0.1:8443,github.com=[::1]` -> {host: (address, port|None)}."""
    out: dict[str, tuple[str, int | None]] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, addr = item.partition("=")
        host = host.strip().lower().rstrip(".")
        addr = addr.strip()
        if not sep or not host or not addr:
            raise FleetError(f"FLEET_RESOLVE: expected host=address[:port] (found {item!r})")
        port: int | None = None
        if addr.startswith("["):
            inner, _, rest = addr[1:].partition("]")
            addr = inner
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif addr.count(":") == 1:
            addr, _, p = addr.partition(":")
            if not p.isdigit():
                raise FleetError(f"FLEET_RESOLVE: bad port in {item!r}")
            port = int(p)
        out[host] = (addr, port)
    return out


def bridge_gateway() -> str | None:
    """The Docker bridge gateway: docker0's IPv4 address, else what the engine
    says (`docker network inspect bridge`, IPAM gateway)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", b"docker0"))  # SIOCGIFADDR
            return socket.inet_ntoa(res[20:24])
    except OSError:
        pass
    try:
        import docker

        client = docker.from_env(timeout=5)
        for cfg in client.api.inspect_network("bridge").get("IPAM", {}).get("Config") or []:
            if cfg.get("Gateway"):
                return str(cfg["Gateway"])
    except Exception:
        pass
    return None


@dataclass
class ForwardConfig:
    bind: str | None = None  # None: the Docker bridge gateway
    port: int | None = None  # None: recorded, else DEFAULT_PORT
    resolve: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    upstream_ca: str | None = None
    header_timeout: float = 30.0
    idle_timeout: float = 75.0
    connect_timeout: float = 10.0
    poll_interval: float = 0.3
    listen_retry: float = 2.0
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> "ForwardConfig":
        env = os.environ
        cfg = cls(resolve=parse_resolve(env.get("FLEET_RESOLVE")), upstream_ca=env.get("FLEET_UPSTREAM_CA") or None)
        if env.get("FLEET_GRANTS_BIND"):
            cfg.bind = env["FLEET_GRANTS_BIND"]
        if env.get("FLEET_GRANTS_PORT"):
            text = env["FLEET_GRANTS_PORT"].strip()
            if not text.isdigit() or not 0 <= int(text) < 65536:
                raise FleetError(f"FLEET_GRANTS_PORT: expected a port number (found {text!r})")
            cfg.port = int(text)
        return cfg


class Refused(Exception):
    """A destination the proxy will not connect to."""


class _Bad(Exception):
    """A request answered by the proxy itself (status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def response(status: int, text: str, close: bool = True, extra: list[tuple[str, str]] | None = None) -> bytes:
    body = (text.rstrip("\n") + "\n").encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "X-Fleet-Proxy: grants"]
    lines += [f"{k}: {v}" for k, v in (extra or [])]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


def rewrite_head(raw: bytes, drop: set[bytes], add: list[tuple[str, str]], first: bytes | None = None) -> bytes:
    """`raw` (a head without its final CRLFCRLF) without the `drop` headers
    (lower-case names), with `add` appended; `first` replaces the first line."""
    lines = raw.split(b"\r\n")
    kept = [ln for ln in lines[1:] if _header_name(ln) not in drop]
    kept += [f"{k}: {v}".encode("latin-1") for k, v in add]
    return b"\r\n".join([first or lines[0], *kept]) + b"\r\n\r\n"


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
        raise _Bad(400, f"bad port in {text!r}")
    p = int(port) if port else default_port
    host = host.lower().rstrip(".")
    if not host or not 0 < p < 65536:
        raise _Bad(400, f"bad target {text!r}")
    return host, p


def _reflecting(method: bytes) -> bool:
    """TRACE and TRACK echo the request, injected credential included."""
    return method.upper() in (b"TRACE", b"TRACK")


def _wants_close(head) -> bool:
    tokens = head.tokens(b"connection")
    if b"close" in tokens:
        return True
    return head.version == b"1.0" and b"keep-alive" not in tokens


# -- the server ----------------------------------------------------------------------------


class ForwardProxy:
    """The grants forward proxy. `start()` begins watching the agent map and
    listens while it has entries; `stop()` closes everything."""

    def __init__(self, config: ForwardConfig | None = None, ca: CertificateAuthority | None = None,
                 on_state: Callable[[dict], None] | None = None, peers: Peers | None = None) -> None:
        self._config_error: str | None = None
        if config is None:
            try:
                config = ForwardConfig.from_env()
            except FleetError as exc:  # fail closed: report, never listen
                config, self._config_error = ForwardConfig(), str(exc)
        self.config = config
        self.ca = ca or interception_ca()
        self._on_state = on_state
        self._peers = peers or Peers()
        self.pending = SourceLimiter.from_env(what="grants proxy")  # per-source caps before a credential is accepted
        self._warned: dict[tuple, float] = {}
        self._entries: dict[str, agentmap.AgentEntry] = {}
        self._map_sig: tuple | None = None
        self._server: asyncio.AbstractServer | None = None
        self._poll_task: asyncio.Task | None = None
        self._retry_at = 0.0
        self._conns: set[asyncio.StreamWriter] = set()
        self._secrets: dict[str, tuple[tuple, str]] = {}
        self._upstream_ctx: ssl.SSLContext | None = None
        self.address: tuple[str, int] | None = None
        self.error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._reload()
        await self._sync_listener()
        self._poll_task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
        await self._close_listener()
        for w in list(self._conns):
            w.close()
        self._write_state(stopping=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval)
            try:
                self._reload()
                await self._sync_listener()
            except Exception:  # never let the watcher die
                log.exception("grants: watching the agent map failed")

    def _reload(self) -> None:
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
            self._entries = agentmap.entries() if sig is not None else {}
        except FleetError as exc:
            log.error("grants: %s (no agent can use grants until it is fixed)", exc)
            self._entries = {}
        self._peers.forget({e.container for e in self._entries.values() if e.container})
        log.info("grants: %d agent(s) hold proxy credentials", len(self._entries))

    async def _sync_listener(self) -> None:
        if self._entries and self._server is None and time.monotonic() >= self._retry_at:
            await self._listen()
        elif not self._entries and self._server is not None:
            await self._close_listener()
            self._write_state()

    def _port(self) -> tuple[int, bool]:
        """(port, pinned): pinned ports are not replaced when taken."""
        if self.config.port is not None:
            return self.config.port, True
        try:
            return int(port_path().read_text().strip()), True
        except (FileNotFoundError, ValueError):
            return DEFAULT_PORT, False

    async def _listen(self) -> None:
        if self._config_error is not None:
            if self.error != self._config_error:
                self.error = self._config_error
                log.error("grants: %s", self.error)
                self._write_state()
            return
        bind = self.config.bind or await asyncio.to_thread(bridge_gateway)
        if bind is None:
            self.error = "no Docker bridge found (no docker0 interface, no engine answering); grants need Docker"
            self._retry_at = time.monotonic() + self.config.listen_retry
            self._write_state()
            return
        port, pinned = self._port()
        try:
            try:
                server = await self._bind(bind, port)
            except OSError as exc:
                if pinned or exc.errno != errno.EADDRINUSE:
                    raise
                server = await self._bind(bind, 0)  # 3128 is taken here: pick one and keep it
            actual = server.sockets[0].getsockname()[1]
            if not pinned:
                port_path().parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_atomic(port_path(), f"{actual}\n", mode=0o644)  # a full disk never leaves it empty
        except OSError as exc:
            self.error = f"cannot listen on {bind}:{port}: {exc.strerror or exc}"
            log.error("grants: %s", self.error)
            self._retry_at = time.monotonic() + self.config.listen_retry
            self._write_state()
            return
        self._server = server
        self.address = (bind, actual)
        self.error = None
        log.info("grants: forward proxy listening on %s:%d", bind, actual)
        self._write_state()

    async def _bind(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._handle, host, port, limit=self.config.max_header_bytes, reuse_address=True)

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
            log.info("grants: forward proxy stopped listening")
        self.address = None

    def _write_state(self, stopping: bool = False) -> None:
        state = {
            "pid": os.getpid(),
            "listening": None if stopping or self.address is None else f"{self.address[0]}:{self.address[1]}",
            "bind": self.address[0] if self.address else None,
            "port": self.address[1] if self.address else None,
            "agents": len(self._entries),
            "error": self.error,
        }
        path = state_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(path, json.dumps(state, sort_keys=True) + "\n", mode=0o644)
        except OSError as exc:
            log.error("grants: cannot write %s: %s", path, exc)
        if self._on_state is not None:
            self._on_state(state)

    # -- per connection --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        slot = self.pending.admit(peer[0] if peer else "?")
        if slot is None:  # this source already holds too many connections: drop it, serve the others
            writer.transport.abort()
            return
        self._conns.add(writer)
        try:
            await self._serve(reader, writer, peer, slot)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ssl.SSLError, HttpError, _Bad):
            pass
        except Exception:
            log.exception("grants: connection from %s failed", peer)
        finally:
            slot.release()
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _read_head(self, reader: asyncio.StreamReader, timeout: float) -> bytes | None:
        """A message head without its final CRLFCRLF; None at a clean EOF."""
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _Bad(400, "connection closed in the middle of a request head")
            return None
        except asyncio.LimitOverrunError:
            raise _Bad(431, "request head too large")
        except asyncio.TimeoutError:
            return None
        return raw[:-4].lstrip(b"\r\n")

    def _authenticate(self, head) -> tuple[str, agentmap.AgentEntry] | None:
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
        entry = self._entries.get(key)
        return (key, entry) if entry is not None else None

    async def _serve(self, reader, writer, peer, slot=None) -> None:
        timeout = self.config.header_timeout
        while True:
            try:
                raw = await self._read_head(reader, timeout)
            except _Bad as exc:
                writer.write(response(exc.status, str(exc)))
                await writer.drain()
                return
            if raw is None:
                return
            timeout = self.config.idle_timeout
            try:
                head = parse_request_head(raw)
            except HttpError as exc:
                writer.write(response(exc.status, str(exc)))
                await writer.drain()
                return
            who = self._authenticate(head)
            if who is None:
                had = bool(head.get_all(b"proxy-authorization"))
                log.warning(
                    "grants: 407 %s %s from %s (%s)", head.method.decode("latin-1"), head.target.decode("latin-1").split("?", 1)[0][:200],
                    peer[0] if peer else "?", "unknown credential" if had else "no credential",
                    extra={"source": peer[0] if peer else "?"},
                )
                writer.write(response(407, "fleet-proxy: proxy authentication required (use the HTTPS_PROXY fleet set for this agent)",
                                      extra=[("Proxy-Authenticate", 'Basic realm="fleet"')]))
                await writer.drain()
                return
            key, entry = who
            if not await self._from_owner(entry, peer, head):
                writer.write(response(407, "fleet-proxy: this proxy credential belongs to another container",
                                      extra=[("Proxy-Authenticate", 'Basic realm="fleet"')]))
                await writer.drain()
                return
            if slot is not None:
                slot.trusted()  # an accepted credential: no longer counted against the source's pending cap
            if head.method == b"CONNECT":
                await self._connect(head, key, entry, reader, writer, peer)
                return
            if not await self._plain(head, raw, entry, reader, writer):
                return

    async def _from_owner(self, entry: agentmap.AgentEntry, peer, head=None) -> bool:
        """Whether this connection comes from the container `entry`'s credential
        was issued to (checked on every request: a stolen credential is refused
        from anywhere else)."""
        ip = peer[0] if peer else None
        if await self._peers.owns(entry.container, ip):
            return True
        what = "not bound to a container (issued by an older fleet? recreate the agent)" if not entry.container else \
            f"not from its container {entry.container[:12]}"
        where = f" ({head.method.decode('latin-1')} {head.target.decode('latin-1').split('?', 1)[0][:200]})" if head is not None else ""
        now = time.monotonic()
        last = self._warned.get((entry.fleet, entry.agent, ip))
        if last is not None and now - last < 60:
            return False  # said within the last minute: a replay loop does not flood proxy.log
        if len(self._warned) > 1000:
            self._warned.clear()
        self._warned[(entry.fleet, entry.agent, ip)] = now
        log.warning("grants: 407 credential of %s/%s used from %s%s: %s", entry.fleet, entry.agent, ip or "?", where, what)
        return False

    # -- CONNECT ---------------------------------------------------------------------------

    async def _connect(self, head, key: str, entry: agentmap.AgentEntry, reader, writer, peer=None) -> None:
        target = head.target.decode("latin-1")
        try:
            host, port = split_authority(target, 443)
        except _Bad as exc:
            writer.write(response(exc.status, str(exc)))
            await writer.drain()
            return
        rules = [r for r in entry.rules if r.host == host and r.port == port]
        if rules:
            await self._intercept(host, port, key, entry, reader, writer, peer)
        else:
            await self._tunnel(host, port, entry, reader, writer)

    async def _tunnel(self, host: str, port: int, entry, reader, writer) -> None:
        record = dict(method="CONNECT", host=host, port=port, path="", grant=None, mode="tunnel")
        upstream = await self._open_or_answer(host, port, False, entry, record, writer)
        if upstream is None:
            return
        up_r, up_w = upstream
        netlog.record(entry.fleet, entry.agent, status=200, **record)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await pipe_both(reader, writer, up_r, up_w)
        finally:
            up_w.close()

    async def _intercept(self, host: str, port: int, key: str, entry, reader, writer, peer=None) -> None:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            ctx = self.ca.leaf_context(host)
            await writer.start_tls(ctx, ssl_handshake_timeout=self.config.header_timeout)
        except (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError) as exc:
            netlog.record(entry.fleet, entry.agent, method="CONNECT", host=host, port=port, path="", status=None,
                          grant=None, mode="intercept",
                          error=f"TLS with the agent failed ({exc.__class__.__name__}); is /etc/fleet/ca-bundle.crt trusted?")
            return
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    raw = await self._read_head(reader, self.config.idle_timeout)
                except _Bad as exc:
                    writer.write(response(exc.status, str(exc)))
                    await writer.drain()
                    return
                if raw is None:
                    return
                current = self._entries.get(key)
                if current is None or not await self._from_owner(current, peer):  # revoked, or re-bound elsewhere
                    writer.write(response(407, "fleet-proxy: this agent's proxy credential was revoked",
                                          extra=[("Proxy-Authenticate", 'Basic realm="fleet"')]))
                    await writer.drain()
                    return
                try:
                    head = parse_request_head(raw)
                except HttpError as exc:
                    writer.write(response(exc.status, str(exc)))
                    await writer.drain()
                    return
                path = head.target.decode("latin-1")
                if _reflecting(head.method):
                    netlog.record(current.fleet, current.agent, method=head.method.decode("latin-1"), host=host, port=port,
                                  path=path, grant=None, mode="intercept", status=405, error="TRACE/TRACK refused")
                    writer.write(response(405, f"fleet-proxy: {head.method.decode('latin-1')} is refused (it would echo the injected credential)",
                                          extra=[("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]))
                    await writer.drain()
                    return
                rule = pick([r for r in current.rules if r.host == host and r.port == port], host, port, path)
                record = dict(method=head.method.decode("latin-1"), host=host, port=port, path=path,
                              grant=rule.grant if rule else None, mode="intercept")
                try:
                    add = self._credential_header(rule) if rule else []
                except (FleetError, _Bad) as exc:
                    netlog.record(current.fleet, current.agent, status=502, error=str(exc).split(";")[0], **record)
                    writer.write(response(502, f"fleet-proxy: {exc}"))
                    await writer.drain()
                    return
                drop = {b"proxy-authorization", b"proxy-connection"}
                if rule:
                    drop.add(rule.header.lower().encode())
                out_head = rewrite_head(raw, drop, add)
                if upstream is None:
                    upstream = await self._open_or_answer(host, port, True, current, record, writer)
                    if upstream is None:
                        return
                status, keep = await self._exchange(head, out_head, reader, writer, upstream[0], upstream[1], plain=False)
                netlog.record(current.fleet, current.agent, status=status, **record)
                if not keep:
                    return
        finally:
            if upstream is not None:
                upstream[1].close()

    def _credential_header(self, rule: Rule) -> list[tuple[str, str]]:
        if not _TOKEN.match(rule.header):
            raise _Bad(502, f"grant {rule.grant}: {rule.header!r} is not a valid header name")
        value = rule.render(self._secret(rule.grant))
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise _Bad(502, f"grant {rule.grant}: its header value contains control characters")
        return [(rule.header, value)]

    def _secret(self, name: str) -> str:
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

    # -- plain http --------------------------------------------------------------------------

    async def _plain(self, head, raw: bytes, entry, reader, writer) -> bool:
        target = head.target.decode("latin-1")
        u = urlsplit(target)
        record = dict(method=head.method.decode("latin-1"), host=(u.hostname or "?"), port=u.port or 80,
                      path=(u.path or "/"), grant=None, mode="http")
        if u.scheme != "http" or not u.hostname:
            netlog.record(entry.fleet, entry.agent, status=400, error="not an absolute http:// URL", **record)
            writer.write(response(400, "fleet-proxy: expected an absolute http:// URL (use CONNECT for https)"))
            await writer.drain()
            return False
        if _reflecting(head.method):
            netlog.record(entry.fleet, entry.agent, status=405, error="TRACE/TRACK refused", **record)
            writer.write(response(405, f"fleet-proxy: {head.method.decode('latin-1')} is refused"))
            await writer.drain()
            return False
        host, port = u.hostname.lower().rstrip("."), u.port or 80
        origin = (u.path or "/") + (f"?{u.query}" if u.query else "")
        first = b" ".join([head.method, origin.encode("latin-1"), b"HTTP/1.1"])
        drop = {b"proxy-authorization", b"proxy-connection", b"connection", b"keep-alive"} | head.tokens(b"connection")
        out_head = rewrite_head(raw, drop - {b"transfer-encoding", b"content-length", b"host"}, [("Connection", "close")], first=first)
        upstream = await self._open_or_answer(host, port, False, entry, record, writer)
        if upstream is None:
            return False
        up_r, up_w = upstream
        try:
            status, keep = await self._exchange(head, out_head, reader, writer, up_r, up_w, plain=True)
        finally:
            up_w.close()
        netlog.record(entry.fleet, entry.agent, status=status, **record)
        return keep

    # -- one exchange ----------------------------------------------------------------------

    async def _exchange(self, head, out_head: bytes, reader, writer, up_r, up_w, plain: bool) -> tuple[int, bool]:
        """Send one request upstream, relay its response; (status, keep-alive)."""
        try:
            kind, length = request_framing(head)
        except HttpError as exc:
            writer.write(response(exc.status, str(exc)))
            await writer.drain()
            return exc.status, False
        up_w.write(out_head)
        body = asyncio.create_task(copy_body(kind, length, reader, up_w))
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(up_r.readuntil(b"\r\n\r\n"), self.config.idle_timeout)
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ssl.SSLError):
                    if not body.done():
                        body.cancel()
                    writer.write(response(502, "fleet-proxy: the upstream closed the connection without a response"))
                    await writer.drain()
                    return 502, False
                try:
                    rhead = parse_response_head(raw[:-4])
                except HttpError as exc:
                    writer.write(response(502, f"fleet-proxy: {exc}"))
                    await writer.drain()
                    return 502, False
                if 100 <= rhead.status < 200 and rhead.status != 101:
                    writer.write(raw)  # interim (100 Continue): relay and read on
                    await writer.drain()
                    continue
                break
            if rhead.status == 101:
                writer.write(raw)
                await writer.drain()
                await body
                await pipe_both(reader, writer, up_r, up_w)
                return 101, False
            rkind, rlength = response_framing(rhead, head.method)
            keep = not _wants_close(head) and not _wants_close(rhead) and rkind != UNTIL_CLOSE
            if plain:
                drop = {b"connection", b"keep-alive", b"proxy-connection"}
                raw = rewrite_head(raw[:-4], drop, [] if keep else [("Connection", "close")])
            writer.write(raw)
            await copy_body(rkind, rlength, up_r, writer)
            await writer.drain()
            if not body.done():
                try:
                    await asyncio.wait_for(asyncio.shield(body), 1.0)
                except asyncio.TimeoutError:
                    body.cancel()
                    keep = False
            elif body.exception() is not None:
                keep = False
            return rhead.status, keep
        finally:
            if not body.done():
                body.cancel()
            with contextlib.suppress(BaseException):
                await body

    # -- upstream --------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        if self._upstream_ctx is None:
            ctx = ssl.create_default_context()
            if self.config.upstream_ca:
                ctx.load_verify_locations(cafile=self.config.upstream_ca)
            ctx.set_alpn_protocols(["http/1.1"])
            self._upstream_ctx = ctx
        return self._upstream_ctx

    async def _addresses(self, host: str, port: int) -> list[tuple[str, int]]:
        mapped = self.config.resolve.get(host)
        if mapped is not None:
            return [(mapped[0], mapped[1] or port)]
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.config.connect_timeout
        )
        out: list[tuple[str, int]] = []
        local = destinations.local_addresses()
        for family, _, _, _, sockaddr in infos:
            why = destinations.refusal(sockaddr[0], local)
            if why:  # one bad address refuses the name: what is vetted is what is connected to
                literal = destinations.parse_ip(host)
                said = host if literal is not None and literal == destinations.parse_ip(sockaddr[0]) \
                    else f"{host} (resolves to {sockaddr[0]})"
                raise Refused(f"{said} is {why}; fleet-proxy does not connect to this machine")
            if (sockaddr[0], port) not in out:
                out.append((sockaddr[0], port))
        if not out:
            raise OSError(errno.EHOSTUNREACH, f"{host} has no address")
        return out

    async def _open_or_answer(self, host: str, port: int, tls: bool, entry, record: dict, writer):
        """The upstream streams; or, when it cannot be reached, the failure
        logged for the agent and answered to its client, and None."""
        try:
            return await self._open(host, port, tls=tls)
        except (Refused, _Bad, OSError, asyncio.TimeoutError) as exc:
            status, text = self._failure(exc, host, port)
            netlog.record(entry.fleet, entry.agent, status=status, error=text, **record)
            writer.write(response(status, text))
            await writer.drain()
            return None

    async def _open(self, host: str, port: int, tls: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: Exception | None = None
        for addr, aport in await self._addresses(host, port):
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        addr, aport, ssl=self._ssl() if tls else None, server_hostname=host if tls else None,
                        limit=self.config.max_header_bytes,
                    ),
                    self.config.connect_timeout,
                )
            except ssl.SSLCertVerificationError as exc:
                raise _Bad(502, f"fleet-proxy: the certificate of {host} is not trusted ({exc.verify_message})") from None
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        assert last is not None
        raise last

    @staticmethod
    def _failure(exc: Exception, host: str, port: int) -> tuple[int, str]:
        if isinstance(exc, Refused):
            return 403, f"fleet-proxy: {exc}"
        if isinstance(exc, _Bad):
            return exc.status, str(exc)
        if isinstance(exc, asyncio.TimeoutError):
            return 504, f"fleet-proxy: connecting to {host}:{port} timed out"
        return 502, f"fleet-proxy: cannot connect to {host}:{port}: {getattr(exc, 'strerror', None) or exc}"

