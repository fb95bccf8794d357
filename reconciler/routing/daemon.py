"""The one routing proxy per user machine, as a detached background process.

`fleet apply` calls `ensure_running()` when an agent declares ports; the proxy
then outlives the command. Its state lives under `$FLEET_HOME`: `proxy.pid`,
`proxy.log`, `proxy.state.json` (what it listens on, listen errors) and
`proxy.lock`, an flock the running proxy holds for its whole life, so there is
never a second one and a stale pid file is recognised as such. Routes are not
its state: they are in `routes.json`, so a restarted proxy serves them at once.

Run as `python -m reconciler.routing.daemon` (what `start()` spawns).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator, Sequence

from reconciler.core.errors import FleetError
from reconciler.state.home import ensure_dir, fleet_home, write_atomic
from reconciler.net import limits
from reconciler.net import logcontrol
from reconciler.routing.config import ProxyConfig
from reconciler.routing.process import lock_path, log_path, pid_path, read_state, running_pid, start_lock_path, state_path
from reconciler.routing.status import ProxyStatus, RouteStatus, status
from reconciler.routing.table import Listen, add_listen, read_table, remove_listen

if TYPE_CHECKING:  # the server's modules (TLS, relay) load only where the proxy runs:
    from reconciler.net.ca import CertificateAuthority
    from reconciler.routing.proxy import ProxyServer  # `fleet apply` only starts it and waits for it

__all__ = [
    "ProxyStatus", "RouteStatus", "ensure_running", "lock_path", "log_path", "pid_path", "read_state",
    "run_foreground", "running_pid", "start", "start_lock", "state_path", "status", "stop", "wait_links", "wait_loaded",
]

log = logging.getLogger("fleet.proxy")

START_TIMEOUT = 15.0
LOG_ROTATE_BYTES = logcontrol.DEFAULT_MAX_BYTES  # at spawn; the running proxy rotates at its own setting


def wanted_listen() -> list[Listen]:
    return read_table().listen_addresses(ProxyConfig().default_listen)


# -- start / stop -------------------------------------------------------------------------


@contextlib.contextmanager
def start_lock() -> Iterator[None]:
    """Held while the proxy is started or stopped for lack of routes."""
    ensure_dir(fleet_home())
    with open(start_lock_path(), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _spawn() -> subprocess.Popen:
    home = ensure_dir(fleet_home())
    log_file = log_path()
    with contextlib.suppress(OSError):
        if log_file.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_file, log_file.with_name("proxy.log.1"))
    env = dict(os.environ)
    env["FLEET_HOME"] = str(home)
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler.routing.daemon", "--detach"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            cwd="/",
            env=env,
            start_new_session=True,
            close_fds=True,
        )


def _log_tail(lines: int = 5) -> str:
    try:
        text = log_path().read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def wait_ready(pid: int, wanted: list[Listen], timeout: float = START_TIMEOUT) -> dict:
    """Wait until the proxy `pid` listens on every `wanted` address (or reports
    why it cannot). Raises FleetError naming a port it cannot take."""
    keys = {x.key for x in wanted}
    deadline = time.monotonic() + timeout
    while True:
        state = read_state()
        if state and state.get("pid") == pid:
            listening = {f"{x['bind']}:{x['port']}" for x in state.get("listening", [])}
            errors = state.get("errors", {})
            bad = sorted(k for k in keys if k in errors)
            if bad:
                raise FleetError("fleet proxy: " + "; ".join(errors[k] for k in bad))
            if keys <= listening:
                return state
        if running_pid() != pid:
            raise FleetError(f"the fleet proxy (pid {pid}) stopped; see {log_path()}")
        if time.monotonic() > deadline:
            raise FleetError(f"the fleet proxy did not start listening within {timeout:g}s; see {log_path()}")
        time.sleep(0.05)


def start(
    port: int | None = None,
    bind: str = "127.0.0.1",
    timeout: float = START_TIMEOUT,
    need: Sequence[Listen] | None = None,
) -> dict:
    """Start the proxy if it is not running; with `port`, also listen there
    (remembered in the route table). Returns the proxy's state once it listens
    on every address in `need` (default: every address the table asks for),
    raising FleetError naming a port it cannot take. Idempotent."""
    added = False
    if port is not None:
        added = Listen(port=port, bind=bind) not in read_table().listen
        add_listen(port, bind)
    _routing_ca().ensure()  # here, not only in the background: a CA replaced by an upgrade says so to the user
    wanted = list(need) if need is not None else wanted_listen()
    if port is not None:
        wanted.append(Listen(port=port, bind=bind))
    with start_lock():
        pid = running_pid()
        launched = pid is None
        if pid is None:
            pid = _launch(timeout)
        try:
            return wait_ready(pid, wanted, timeout)
        except FleetError:
            # a failed start leaves nothing behind: not the port it could not take
            # in the table (the next start would fail on it again), not a proxy
            # this call launched that listens on less than it was asked to
            if added and port is not None:
                remove_listen(port)
            if launched:
                stop()
            elif added:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)  # the running proxy drops the port again
            raise


def _launch(timeout: float) -> int:
    """Start the background process; returns its pid once it holds the lock.
    The launcher forks the proxy and exits, so the proxy is nobody's child."""
    proc = _spawn()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = -1
    pid = running_pid()
    if code != 0 or pid is None:
        tail = _log_tail()
        raise FleetError(
            f"the fleet proxy did not start (code {code}); see {log_path()}" + (f":\n{tail}" if tail else "")
        )
    return pid


def ensure_running(need: Sequence[Listen] | None = None, timeout: float = START_TIMEOUT) -> dict:
    """What `fleet apply` calls after writing routes when any agent has ports:
    the proxy runs and listens on `need` (pass `table.proxy_listen(desired.proxy)`
    so another fleet's unavailable port does not fail this fleet), by default
    on every port in the table."""
    return start(timeout=timeout, need=need)


def stop(timeout: float = 10.0) -> int | None:
    """Stop the running proxy; returns its pid, or None when none was running."""
    pid = running_pid()
    if pid is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid() is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            break
        time.sleep(0.05)
    return pid


def agent_address() -> str | None:
    """Where containers reach this machine's proxy: the Docker bridge gateway
    (what `host-gateway` maps to), or `FLEET_PROXY_AGENT_BIND` (`off`: nowhere)."""
    value = os.environ.get("FLEET_PROXY_AGENT_BIND", "").strip()
    if value:
        return None if value == "off" else value
    import struct

    try:  # docker0's IPv4 address, cheaply (this runs on every agent creation)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", b"docker0"))[20:24])  # SIOCGIFADDR
    except OSError:
        from reconciler.grants.forward import bridge_gateway  # else what the engine says

        return bridge_gateway()


LOAD_TIMEOUT = 10.0


def wait_loaded(revision: int, timeout: float = LOAD_TIMEOUT) -> None:
    """Return once the running proxy serves route table `revision` (or a later
    one): `fleet apply` returns only when its routes are live. It is told to
    reload at once (SIGHUP) rather than at its next poll. No proxy running:
    nothing to wait for. FleetError, naming the revisions, on timeout."""
    pid = running_pid()
    if pid is None:
        return
    asked = time.time()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    state: dict | None = None
    while True:
        state = read_state()
        if state and state.get("pid") == pid:
            if "revision" in state:
                if int(state["revision"]) >= revision:
                    return
            elif float(state.get("table_loaded_at") or 0) >= asked:  # a proxy from before revisions
                return
        if running_pid() != pid:
            raise FleetError(f"the fleet proxy (pid {pid}) stopped before loading the new routes; see {log_path()}")
        if time.monotonic() > deadline:
            serving = (state or {}).get("revision", "unknown")
            raise FleetError(
                f"the fleet proxy (pid {pid}) did not load route table revision {revision} within {timeout:g}s "
                f"(it serves revision {serving}); see {log_path()}"
            )
        time.sleep(0.01)


LINK_TIMEOUT = 20.0


def wait_links(engines: set[str], timeout: float = LINK_TIMEOUT) -> dict[str, str]:
    """Wait (bounded) until the running proxy's ssh links to `engines` are up,
    or have failed (an unreachable engine costs no wait); returns engine -> why
    not, for those still down (their routes answer 502 naming the engine until
    the link is back; the daemon keeps retrying)."""
    deadline = time.monotonic() + timeout
    while True:
        links = (read_state() or {}).get("links") or {}
        down = {e: str((links.get(e) or {}).get("error") or "connecting") for e in engines
                if not (links.get(e) or {}).get("up")}
        pending = [e for e in down if not (links.get(e) or {}).get("error")]
        if not pending or running_pid() is None or time.monotonic() > deadline:
            return down
        time.sleep(0.05)


# -- the process itself -------------------------------------------------------------------


def _take_lock(wait: float = 2.0) -> IO[str] | None:
    ensure_dir(fleet_home())
    fh = open(lock_path(), "a+")
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fh
        except BlockingIOError:
            if time.monotonic() > deadline:
                fh.close()
                return None
            time.sleep(0.05)


def _routing_ca() -> "CertificateAuthority":
    from reconciler.net.ca import routing_ca

    return routing_ca()


async def _serve(config: "ProxyConfig") -> None:
    from reconciler.routing.proxy import ProxyServer

    last = {"state": ""}
    soft, hard = limits.raise_nofile()
    limits.shrink_tls_buffers()
    log.info("descriptor limit %d (hard %d)", soft, hard)

    def on_change(server: "ProxyServer") -> None:
        text = json.dumps(server.state(), sort_keys=True)
        if text != last["state"]:
            last["state"] = text
            write_atomic(state_path(), text + "\n", mode=0o644)

    ca = _routing_ca()
    if config.agent_bind is None:
        config.agent_bind = await asyncio.to_thread(agent_address)
    server = ProxyServer(config, ca, on_change=on_change)
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    from reconciler.grants.forward import ForwardProxy  # grants: the credential-injecting forward proxy
    from reconciler.routing.links import EngineLinks  # ssh links to remote engines

    forward = ForwardProxy()
    links = server.links = EngineLinks(forward, on_change=lambda: on_change(server))
    wake = asyncio.Event()

    def hup() -> None:
        server.reload(force=True)
        wake.set()

    loop.add_signal_handler(signal.SIGHUP, hup)
    await server.start()
    await forward.start()

    async def keep_links() -> None:  # the links the routes and the remote agents' credentials need
        while True:
            try:
                forward.access.reload()
                await links.sync(server.route_engines())
            except Exception:  # never let the keeper die
                log.exception("keeping the engine links failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), 1.0)
            wake.clear()
    # What start-up built lives as long as the process: keep it out of the
    # collector's way, so a full collection never stalls a request for long.
    gc.collect()
    gc.freeze()
    log.info("fleet proxy running (pid %d), CA %s", os.getpid(), ca.cert_path)

    async def summaries() -> None:  # say how many log lines were held back, even after a flood stops
        while True:
            await asyncio.sleep(5.0)
            logcontrol.say_suppressed()

    said = loop.create_task(summaries())
    kept = loop.create_task(keep_links())
    try:
        await stop_event.wait()
    finally:
        said.cancel()
        kept.cancel()
        log.info("fleet proxy stopping")
        await links.stop()
        await forward.stop()
        await server.stop()


def run_foreground(
    port: int | None = None, bind: str = "127.0.0.1", config: "ProxyConfig | None" = None, ready_fd: int | None = None
) -> int:
    """Run the proxy in this process until SIGINT/SIGTERM (`fleet proxy run`,
    and the body of the background process). `ready_fd` gets b"ok" once this
    process holds the proxy lock and has written its pid."""
    if port is not None:
        add_listen(port, bind)
    lock = _take_lock()
    if lock is None:
        pid = running_pid()
        raise FleetError(f"the fleet proxy is already running (pid {pid}); `fleet proxy stop` first")
    try:
        level = logging.DEBUG if os.environ.get("FLEET_PROXY_DEBUG") else logging.INFO
        if ready_fd is not None:  # the background process: its own log file, rotated by size
            logcontrol.install(log_path(), level=level)
        elif not logging.getLogger().handlers:
            logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
            logcontrol.add_rate_limit(logging.getLogger().handlers[0])
        limits.tune_malloc()
        config = config or ProxyConfig.from_env()
        write_atomic(pid_path(), f"{os.getpid()}\n", mode=0o644)
        if ready_fd is not None:
            os.write(ready_fd, b"ok")
            os.close(ready_fd)
        asyncio.run(_serve(config))
        return 0
    finally:
        for p in (state_path(), pid_path()):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        lock.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ready_fd = None
    if "--detach" in argv:
        # Fork: the launcher exits once the proxy holds its lock (0) or died (1),
        # and the proxy is re-parented away from whoever started it.
        r, w = os.pipe()
        if os.fork() > 0:
            os.close(w)
            ok = os.read(r, 2) == b"ok"
            os._exit(0 if ok else 1)
        os.close(r)
        ready_fd = w
    try:
        return run_foreground(ready_fd=ready_fd)
    except FleetError as exc:
        print(f"fleet proxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
