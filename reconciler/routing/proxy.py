"""The routing proxy: `<service>.<agent>.localhost:<port>` to the agent's port.

An asyncio reverse proxy (stdlib only). Each listen port serves plain HTTP and
TLS: the first byte of a connection tells them apart (0x16 opens a TLS
handshake), and TLS picks its certificate by SNI from the routing CA. Requests
are routed by their Host header through an index built once per route-table
reload; bodies, chunked streams, Server-Sent Events and upgraded connections
(WebSocket) are passed through as they arrive, with backpressure both ways and
no buffering beyond a bound. Upstream connections are kept alive in a small pool.

The route table (`$FLEET_HOME/routes.json`) is polled for changes; listeners
are started and stopped to match the set of ports the fleets ask for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Callable

from reconciler.core.errors import FleetError
from reconciler.net.ca import CertificateAuthority
from reconciler.net.limits import MemoryTrimmer, Slot, SourceLimiter
from reconciler.net.tls import UpstreamTLS
from reconciler.routing.config import ProxyConfig
from reconciler.routing.index import RouteIndex
from reconciler.routing.relay import ClientConn, UpstreamPool
from reconciler.routing.table import Listen, RouteTable, parse_table, table_path

log = logging.getLogger("fleet.proxy")

__all__ = ["Listener", "ProxyConfig", "ProxyServer", "open_listen_socket", "port_in_use_message", "who_listens"]


# -- listeners and the server ---------------------------------------------------------


def who_listens(port: int) -> str | None:
    """'nginx (pid 123)' for the process listening on TCP `port`, when /proc tells."""
    inodes: set[str] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f[9])
        except (OSError, StopIteration, ValueError):
            continue
    inodes.discard("0")
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") in wanted:
                        comm = Path(f"/proc/{pid}/comm").read_text().strip()
                        return f"{comm} (pid {pid})"
                except OSError:
                    continue
        except OSError:
            continue
    return "another process (not visible to this user)"


def port_in_use_message(listen: Listen) -> str:
    who = who_listens(listen.port)
    by = f" by {who}" if who else ""
    return (
        f"port {listen.port} on {listen.bind} is already in use{by}; stop it or set another "
        f"`proxy.port` in fleet.yaml (or `fleet proxy start --port N`)"
    )


class Listener:
    """One listening socket; accepted connections go to the server's sniffer."""

    def __init__(self, server: "ProxyServer", listen: Listen, sock: socket.socket):
        self.server = server
        self.listen = listen
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.closed = False

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        self.closed = True
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except Exception:
            pass
        self.sock.close()

    def _accept(self) -> None:
        for _ in range(128):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of file descriptors (EMFILE) and the like: the socket stays
                # readable, so stop watching it for a moment rather than spin.
                log.warning("accept on port %s failed: %s; pausing accepts for 0.5 s", self.port, exc)
                loop = asyncio.get_running_loop()
                loop.remove_reader(self.sock.fileno())
                loop.call_later(0.5, self._resume)
                return
            conn.setblocking(False)
            self.server.sniff(conn, self.port, addr[0] if addr else None)

    def _resume(self) -> None:
        if not self.closed:
            self.start()


def open_listen_socket(listen: Listen) -> socket.socket:
    """A bound, listening, non-blocking socket; FleetError when the port is taken."""
    family = socket.AF_INET6 if ":" in listen.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.bind, listen.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE
            raise FleetError(port_in_use_message(listen)) from exc
        if exc.errno == 13:
            raise FleetError(f"no permission to listen on port {listen.port} (ports below 1024 need root)") from exc
        raise FleetError(f"cannot listen on {listen.bind}:{listen.port}: {exc.strerror or exc}") from exc
    return sock


class ProxyServer:
    """The proxy: listeners for every port in the route table, reloading it as it changes."""

    def __init__(
        self,
        config: ProxyConfig | None = None,
        ca: CertificateAuthority | None = None,
        table_file: Path | None = None,
        on_change: Callable[["ProxyServer"], None] | None = None,
    ):
        self.config = config or ProxyConfig()
        self.ca = ca
        self.table_file = table_file or table_path()
        self.on_change = on_change
        self.listeners: dict[tuple[str, int], Listener] = {}
        self.errors: dict[tuple[str, int], str] = {}
        self.index = RouteIndex(RouteTable(), [])
        self.table = RouteTable()
        self.pool = UpstreamPool(self)
        self.clients: set[ClientConn] = set()
        self.probing: set[ClientConn] = set()  # clients that sent EOF while waiting: gone, or half-closed?
        self.links: Any = None  # routing.links.EngineLinks, set by the daemon: remote engines' targets
        self._tasks: set[asyncio.Task] = set()
        self._stamp: tuple[int, int, int] | None = None
        self._tls: ssl.SSLContext | None = None
        self._upstream_tls = UpstreamTLS(self.config.upstream_ca)
        self._watch: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._last_retry = 0.0
        self.loaded_at = 0.0
        self._ca_stamp: tuple[int, int, int] | None = None
        self.pending = SourceLimiter(
            self.config.max_pending_per_source, self.config.max_connections_per_source, what="routing proxy"
        )
        self.trimmer = MemoryTrimmer()

    # TLS contexts
    def tls_context(self) -> ssl.SSLContext | None:
        if self._tls is None and self.ca is not None:
            self._tls = self.ca.server_context()
        return self._tls

    def upstream_ssl(self) -> ssl.SSLContext:
        return self._upstream_tls.context()

    # life
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_exceptions)
        self.tls_context()
        self.check_ca()
        self.reload(force=True)
        self._watch = loop.create_task(self._watch_table())
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self) -> None:
        for task in (self._watch, self._sweeper):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        for lst in list(self.listeners.values()):
            lst.close()
        self.listeners.clear()
        for c in list(self.clients):
            for up in (c.upstream, c.idle_up):
                if up is not None:
                    up.close()
            c.close()
        self.pool.close_all()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let transports finish closing

    async def _watch_table(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                self.reload()
                self.check_ca()
            except Exception:  # never let the watcher die
                log.exception("reloading the route table failed")

    def check_ca(self) -> bool:
        """The CA's certificate changed on disk (replaced by a newer fleet, or
        deleted and made again): new connections get leaves from the new CA."""
        if self.ca is None:
            return False
        try:
            st = os.stat(self.ca.cert_path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return False
        if self._ca_stamp is None or stamp == self._ca_stamp:
            self._ca_stamp = stamp
            return False
        old = self.ca
        try:
            ca = CertificateAuthority(old.directory, old.name, old.permitted_names, old.cache_size).ensure()
            tls = ca.server_context()
        except FleetError as exc:
            log.error("keeping the CA loaded at start: %s", exc)
            self._ca_stamp = stamp
            return False
        self.ca, self._tls, self._ca_stamp = ca, tls, stamp
        log.info("the CA in %s changed; new connections use it", old.directory)
        return True

    async def _sweep(self) -> None:
        """Enforce client deadlines (head, keep-alive, response), notice half-closed
        clients that have gone, and the pool's idle timeout, a few times a second."""
        cfg = self.config
        interval = max(0.05, min(1.0, cfg.header_timeout / 4, cfg.keepalive_timeout / 4, cfg.response_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for c in [c for c in self.clients if c.deadline is not None and c.deadline <= now]:
                try:
                    c.expired()
                except Exception:  # pragma: no cover - never let the sweeper die
                    log.exception("closing an expired connection failed")
            for c in list(self.probing):
                try:
                    c.check_gone()
                except Exception:  # pragma: no cover - never let the sweeper die
                    self.probing.discard(c)
                    log.exception("checking a half-closed client failed")
            self.pool.sweep(now)
            self.trimmer.observe(len(self.clients) + len(self._tasks), now)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.table_file)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, force: bool = False) -> bool:
        """Re-read the table when it changed; returns whether anything changed."""
        stamp = self._file_stamp()
        retry_due = bool(self.errors) and time.monotonic() - self._last_retry >= self.config.listen_retry
        if stamp == self._stamp and not force and not retry_due:
            return False
        changed = False
        if stamp != self._stamp or force:
            table = self.table
            if stamp is None:
                table = RouteTable()
            else:
                try:
                    table = parse_table(Path(self.table_file).read_bytes(), str(self.table_file))
                except (OSError, FleetError) as exc:
                    log.error("keeping the previous routes: %s", exc)
                    self._stamp = stamp
                    return False
            self._stamp = stamp
            self.table = table
            changed = True
        self._sync_listeners()
        ports = sorted({lst.listen.port for lst in self.listeners.values()} | {p for _, p in self.errors})
        self.index = RouteIndex(self.table, ports)
        self.loaded_at = time.time()
        if changed:
            n = sum(len(v) for v in self.index.by_port.values())
            log.info("route table loaded: %d hostnames on ports %s", n, ports)
        if self.on_change is not None:
            self.on_change(self)
        return changed

    def wanted(self) -> list[Listen]:
        out, extra = self.table.listen_addresses(self.config.default_listen), self.config.agent_bind
        ports = {x.port for x in out if x.bind not in ("0.0.0.0", "::", extra)} - {x.port for x in out if x.bind == extra}
        return out + [Listen(port=p, bind=extra) for p in sorted(ports)] if extra else out

    def _sync_listeners(self) -> None:
        wanted = {(x.bind, x.port): x for x in self.wanted()}
        for key in list(self.listeners):
            if key not in wanted:
                self.listeners.pop(key).close()
                log.info("stopped listening on %s:%s", *key)
        for key in list(self.errors):
            if key not in wanted:
                del self.errors[key]
        self._last_retry = time.monotonic()
        for key, item in wanted.items():
            if key in self.listeners:
                continue
            try:
                sock = open_listen_socket(item)
            except FleetError as exc:
                if self.errors.get(key) != str(exc):
                    log.error("%s", exc)
                self.errors[key] = str(exc)
                continue
            self.errors.pop(key, None)
            lst = Listener(self, item, sock)
            lst.start()
            self.listeners[key] = lst
            log.info("listening on %s:%s (HTTP and HTTPS)", *key)

    def listening(self) -> list[Listen]:
        return [lst.listen for lst in self.listeners.values()]

    # connections
    def sniff(self, conn: socket.socket, port: int, source: str | None = None) -> None:
        """Wait for the first byte: 0x16 starts TLS, anything else is plain HTTP.
        A `source` holding too many connections without a complete request
        head (`max_pending_per_source`) has this one closed at once."""
        slot = self.pending.admit(source) if source is not None else None
        if source is not None and slot is None:
            conn.close()
            return
        loop = asyncio.get_running_loop()
        fd = conn.fileno()

        def expire() -> None:
            loop.remove_reader(fd)
            conn.close()
            if slot is not None:
                slot.release()

        timer = loop.call_later(self.config.header_timeout, expire)

        def readable() -> None:
            try:
                first = conn.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                first = b""
            loop.remove_reader(fd)
            timer.cancel()
            if not first:
                conn.close()
                if slot is not None:
                    slot.release()
                return
            tls = first[0] == 0x16 and self.tls_context() is not None
            task = loop.create_task(self._serve(conn, port, tls, slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.add_reader(fd, readable)

    async def _serve(self, conn: socket.socket, port: int, tls: bool, slot: Slot | None = None) -> None:
        loop = asyncio.get_running_loop()
        scheme = "https" if tls else "http"

        def client() -> ClientConn:
            c = ClientConn(self, port, scheme)
            c.slot = slot  # trusted at its first complete request head, released when it closes
            return c

        try:
            if tls:
                await loop.connect_accepted_socket(
                    client,
                    conn,
                    ssl=self.tls_context(),
                    ssl_handshake_timeout=self.config.header_timeout,
                    ssl_shutdown_timeout=5.0,
                )
            else:
                await loop.connect_accepted_socket(client, conn)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("connection on port %s dropped during setup: %s", port, exc)
            conn.close()
            if slot is not None:
                slot.release()

    def state(self) -> dict:
        """What `fleet proxy status` shows about the running server."""
        return {
            "pid": os.getpid(),
            "listening": [x.model_dump() for x in self.listening()],
            "errors": {f"{b}:{p}": msg for (b, p), msg in self.errors.items()},
            "routes": sum(len(self.index.routes(p)) for p in self.index.by_port),
            "table_loaded_at": self.loaded_at,
            "revision": self.table.revision,  # what `daemon.wait_loaded` waits for
            "ca": str(self.ca.cert_path) if self.ca is not None else None,
            **({"links": self.links.state()} if self.links is not None else {}),
        }

    def route_engines(self) -> set[str]:
        """The remote engines the loaded routes are on (each needs a link)."""
        return {r.engine for entry in self.table.fleets.values() for r in entry.routes if r.engine}


def _quiet_exceptions(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    exc = context.get("exception")
    if isinstance(exc, (ssl.SSLError, ConnectionError, asyncio.TimeoutError)):
        log.debug("%s: %s", context.get("message"), exc)
        return
    loop.default_exception_handler(context)
