"""One SSH link per remote Docker engine, kept up by the proxy daemon.

Routes of agents on a remote engine (`Route.engine`, an `ssh://` engine) have
targets on that engine's bridge network, which this machine cannot reach. The
daemon keeps ONE system `ssh` per such engine (so ~/.ssh/config applies):

    ssh -N -D 127.0.0.1:<socks> [-R <gateway>:<port>:127.0.0.1:<listener>] <host>

- `-D`: a dynamic SOCKS forward; the routing proxy dials a remote target
  through it (routing/socks.py). Nothing is published or listens on the remote.
- `-R`, only while agents on that engine hold grant credentials: the remote
  `fleet_agents` gateway's `port` (links.json, state/links.py, written by the
  `credentials issue` action) comes back to a listener here, which dials the
  grants forward proxy from the engine's own loopback source address
  (`source_for_engine`), the identity the remote agents' credentials are bound
  to. The remote sshd needs `GatewayPorts clientspecified` for this.

A link whose ssh exits is started again after a backoff (0.2 s doubling to
10 s, reset once it stayed up 30 s); while it is down a request to its routes
gets a 502 naming the engine. A link no route and no credential needs is
stopped. Its state (`up`, `pid`, `error`, `restarts`) is in the daemon's
state file under "links" (`fleet proxy status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Callable

from reconciler.grants.peers import loopback_peer
from reconciler.load.engines import EngineAddress, parse_engine
from reconciler.state.links import read_links, source_for_engine
from reconciler.net.pipes import pipe_both
from reconciler.net.procs import die_with_parent

if TYPE_CHECKING:
    from reconciler.grants.forward import ForwardProxy

log = logging.getLogger("fleet.proxy")

BACKOFF_FIRST, BACKOFF_MAX, STABLE = 0.2, 10.0, 30.0
SSH_OPTIONS = ("-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "ExitOnForwardFailure=yes",
               "-o", "ControlPath=none", "-o", "ControlMaster=no", "-o", "BatchMode=yes",
               "-o", "ConnectTimeout=10")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Link:
    """The ssh process of one engine, supervised."""

    def __init__(self, engine: str, address: EngineAddress, reverse: tuple[str, int] | None,
                 forward: "ForwardProxy | None", on_change: Callable[[], None]):
        self.engine = engine
        self.address = address
        self.reverse = reverse
        self.forward = forward
        self.on_change = on_change
        self.source = source_for_engine(engine)
        self.socks_port: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.up = False
        self.error: str | None = None
        self.restarts = 0
        self.since = 0.0
        self._task: asyncio.Task | None = None
        self._listener: asyncio.Server | None = None
        self._stopping = False
        self._conns: set[asyncio.Task] = set()

    # -- life ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._kill()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for t in list(self._conns):
            t.cancel()
        self.up = False

    async def _kill(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _listen_back(self) -> int:
        """The local end of the reverse forward (once per link)."""
        if self._listener is None:
            self._listener = await asyncio.start_server(self._back, "127.0.0.1", 0)
        return int(self._listener.sockets[0].getsockname()[1])

    async def _back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A remote agent's connection to its proxy: on to the forward proxy, from
        the engine's loopback source (what its credentials are bound to)."""
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            addr = self.forward.address if self.forward is not None else None
            if addr is None:
                writer.close()
                return
            try:
                up_r, up_w = await asyncio.open_connection(addr[0], addr[1], local_addr=(self.source, 0))
            except OSError as exc:
                log.warning("engine %s: cannot reach the grants proxy at %s:%s: %s", self.engine, *addr, exc)
                writer.close()
                return
            await pipe_both(reader, writer, up_r, up_w)
            up_w.close()
            writer.close()
        finally:
            if task is not None:
                self._conns.discard(task)

    def argv(self, socks_port: int, back_port: int | None) -> list[str]:
        argv = ["ssh", "-N", "-v", *SSH_OPTIONS, "-D", f"127.0.0.1:{socks_port}"]
        if self.reverse is not None and back_port is not None:
            gateway, port = self.reverse
            argv += ["-R", f"{gateway}:{port}:127.0.0.1:{back_port}"]
        return argv + self.address.ssh_args()

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the supervisor die
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("engine %s: link failed", self.engine)
            self.up = False
            self.on_change()
            if self._stopping:
                return
            if time.monotonic() - started >= STABLE:
                delay = BACKOFF_FIRST
            log.warning("engine %s: ssh link down (%s); again in %.1fs", self.engine, self.error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
            self.restarts += 1

    async def _once(self) -> None:
        back = await self._listen_back() if self.reverse is not None else None
        self.socks_port = _free_port()
        argv = self.argv(self.socks_port, back)
        self.proc = proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent(),
        )
        log.info("engine %s: ssh link starting (pid %d): %s", self.engine, proc.pid, " ".join(argv))
        self.on_change()
        said: list[str] = []
        session = forwards = False
        assert proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            if "Entering interactive session" in line:
                session = True
            elif "all expected forwarding replies received" in line:
                forwards = True
            elif not line.startswith("debug") and not line.startswith("OpenSSH_") and line.strip():
                said = (said + [line])[-3:]
            elif "forwarding failed" in line or "Could not request" in line:
                said = (said + [line.removeprefix("debug1: ")])[-3:]
            if session and (forwards or self.reverse is None) and not self.up:
                self.up, self.error, self.since = True, None, time.time()
                log.info("engine %s: ssh link up (pid %d, SOCKS on 127.0.0.1:%d%s)", self.engine, proc.pid,
                         self.socks_port, f", reverse forward {self.reverse[0]}:{self.reverse[1]}" if self.reverse else "")
                self.on_change()
        code = await proc.wait()
        self.up = False
        self.error = f"ssh exited with code {code}" + (f": {' / '.join(said)}" if said else "")

    def state(self) -> dict[str, Any]:
        proc = self.proc
        return {
            "up": self.up,
            "pid": proc.pid if proc is not None and proc.returncode is None else None,
            "socks": f"127.0.0.1:{self.socks_port}" if self.socks_port else None,
            "reverse": f"{self.reverse[0]}:{self.reverse[1]}" if self.reverse else None,
            "source": self.source if self.reverse else None,
            "error": self.error,
            "restarts": self.restarts,
            "since": self.since if self.up else None,
        }


class EngineLinks:
    """The links the route table and the grant credentials need, kept in step by `sync`."""

    def __init__(self, forward: "ForwardProxy | None" = None, on_change: Callable[[], None] | None = None):
        self.forward = forward
        self.on_change = on_change or (lambda: None)
        self.links: dict[str, Link] = {}
        self.invalid: dict[str, str] = {}  # engine -> why it cannot have a link (not ssh, bad value)

    def socks_for(self, engine: str) -> tuple[str, int] | str:
        """Where to dial `engine`'s targets through, or why not (the 502's reason)."""
        link = self.links.get(engine)
        if link is None:
            return self.invalid.get(engine, f"no link to engine {engine} (yet)")
        if not link.up or link.socks_port is None:
            return f"the SSH link to engine {engine} is down ({link.error or 'connecting'})"
        return ("127.0.0.1", link.socks_port)

    def wanted(self, route_engines: set[str]) -> dict[str, tuple[str, int] | None]:
        """engine -> its reverse forward (gateway, port), or None for routes only."""
        out: dict[str, tuple[str, int] | None] = {e: None for e in route_engines}
        entries = self.forward.access.entries if self.forward is not None else {}
        bound = {e.container for e in entries.values() if e.container}
        for engine, rec in read_links().items():
            if loopback_peer(source_for_engine(engine)) in bound and rec.get("gateway") and rec.get("port"):
                out[engine] = (str(rec["gateway"]), int(rec["port"]))
        return out

    async def sync(self, route_engines: set[str]) -> None:
        wanted = self.wanted(route_engines)
        changed = False
        for engine in list(self.links):
            link = self.links[engine]
            if engine not in wanted or wanted[engine] != link.reverse:
                del self.links[engine]
                log.info("engine %s: stopping its ssh link (%s)", engine,
                         "no longer needed" if engine not in wanted else "reverse forward changes")
                await link.stop()
                changed = True
        self.invalid = {}
        for engine, reverse in sorted(wanted.items()):
            if engine in self.links:
                continue
            address = parse_engine(engine)
            if isinstance(address, str):
                self.invalid[engine] = f"engine {engine}: {address}"
                continue
            if address.scheme != "ssh":
                self.invalid[engine] = f"engine {engine} is not reached over ssh; the proxy cannot route to it"
                continue
            link = Link(engine, address, reverse, self.forward, self.on_change)
            self.links[engine] = link
            link.start()
            changed = True
        if changed:
            self.on_change()

    async def stop(self) -> None:
        for link in list(self.links.values()):
            await link.stop()
        self.links.clear()

    def state(self) -> dict[str, dict[str, Any]]:
        out = {e: link.state() for e, link in sorted(self.links.items())}
        for e, why in self.invalid.items():
            out[e] = {"up": False, "error": why}
        return out

