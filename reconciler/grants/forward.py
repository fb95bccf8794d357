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
import contextlib
import errno
import json
import logging
import os
import ssl
import time
from typing import Callable

from reconciler.core.errors import FleetError
from reconciler.grants.forward_access import Access
from reconciler.grants.forward_config import (  # noqa: F401  (the names importers use)
    DEFAULT_PORT,
    ForwardConfig,
    bridge_gateway,
    parse_resolve,
    port_path,
    read_state,
    state_path,
)
from reconciler.grants.forward_exchange import Client
from reconciler.grants.forward_requests import serve
from reconciler.grants.forward_upstream import Upstreams
from reconciler.grants.forward_wire import Answer
from reconciler.grants.peers import Peers
from reconciler.grants.trust import interception_ca
from reconciler.net.ca import CertificateAuthority
from reconciler.net.http1 import HttpError
from reconciler.net.limits import SourceLimiter
from reconciler.state.home import write_atomic

log = logging.getLogger("fleet.grants")

__all__ = ["DEFAULT_PORT", "ForwardConfig", "ForwardProxy", "bridge_gateway", "parse_resolve", "port_path", "read_state",
           "state_path"]


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
        self.access = Access(peers)
        self.upstreams = Upstreams(config)
        self.pending = SourceLimiter.from_env(what="grants proxy")  # per-source caps before a credential is accepted
        self._server: asyncio.Server | None = None
        self._poll_task: asyncio.Task | None = None
        self._retry_at = 0.0
        self._conns: set[asyncio.StreamWriter] = set()
        self.address: tuple[str, int] | None = None
        self.error: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.access.reload()
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
                self.access.reload()
                await self._sync_listener()
            except Exception:  # never let the watcher die
                log.exception("grants: watching the agent map failed")

    async def _sync_listener(self) -> None:
        if self.access.entries and self._server is None and time.monotonic() >= self._retry_at:
            await self._listen()
        elif not self.access.entries and self._server is not None:
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

    async def _bind(self, host: str, port: int) -> asyncio.Server:
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
            "agents": len(self.access.entries),
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
            client = Client(self.config, self.ca, self.access, self.upstreams, reader, writer, peer)
            await serve(client, slot)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ssl.SSLError, HttpError, Answer):
            pass
        except Exception:
            log.exception("grants: connection from %s failed", peer)
        finally:
            slot.release()
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
