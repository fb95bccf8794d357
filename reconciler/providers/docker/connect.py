"""One connection to one Docker engine for the life of a command.

`EngineConnection(address)` (an `EngineAddress` from `parse_engine`, see address.py):
for ssh:// it runs ONE system `ssh -N -L LOCAL.sock:/var/run/docker.sock` (so the
user's ~/.ssh/config, keys and agent apply) and gives docker clients on that local
socket: every call of the command goes over this one SSH connection. A dropped
connection (ssh gone) is restarted on the next call; a read-only call that met the
drop is retried once. Whatever cannot reach the engine raises `EngineUnreachable`
("engine NAME unreachable: ..."), within a bounded time. `close()` ends ssh and
removes its socket; it also runs at exit and on SIGTERM, and on Linux ssh is killed
with this process even when it dies by SIGKILL. For unix:// and tcp:// it just
builds the client.

Imports: the stdlib, the docker SDK (and `requests`, its HTTP layer), core.errors.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker
import requests.exceptions

from reconciler.core.errors import EngineUnavailable
from reconciler.load.engines import REMOTE_SOCKET, EngineAddress, TLSFiles, parse_engine
from reconciler.net.procs import die_with_parent

__all__ = ["EngineAddress", "EngineConnection", "EngineUnreachable", "TLSFiles", "parse_engine"]


class EngineUnreachable(EngineUnavailable, requests.exceptions.ConnectionError):
    """The engine `engine` cannot be reached. A FleetError (one clear line, exit 1)
    and a requests ConnectionError, so code that already handles an engine that
    does not answer (`except (DockerException, ConnectionError)`) handles it too."""

    def __init__(self, engine: str, reason: str):
        self.engine = engine
        self.reason = reason
        super().__init__(f"engine {engine} unreachable: {reason}")


_open: "set[EngineConnection]" = set()  # those with an ssh or a directory: closed at exit
_signal_installed = False


def _close_all() -> None:
    for conn in list(_open):
        conn.close()


def _on_sigterm(signum: int, frame: Any) -> None:
    """Close every connection (no ssh, no socket left), then die of SIGTERM as before."""
    _close_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_cleanup() -> None:
    """atexit always; a SIGTERM handler only where nobody set one (a watcher's own
    handler stops the loop, and the connections close on the way out)."""
    global _signal_installed
    if _signal_installed:
        return
    _signal_installed = True
    atexit.register(_close_all)
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: atexit and the parent-death signal remain
        pass


class _Spawner:
    """Starts ssh from one thread that lives as long as the process: the parent-death
    signal follows the *thread* that forked, and a worker thread of a pool may end."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._preexec = die_with_parent()

    def popen(self, argv: list[str], log: Any) -> subprocess.Popen:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fleet-ssh-spawner", daemon=True)
                self._thread.start()
        done: queue.Queue = queue.Queue(maxsize=1)
        self._jobs.put((argv, log, done))
        result = done.get()
        if isinstance(result, BaseException):
            raise result
        return result

    def _run(self) -> None:
        while True:
            argv, log, done = self._jobs.get()
            try:
                done.put(subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                    start_new_session=True,  # a Ctrl-C at the terminal is the command's to handle
                    preexec_fn=self._preexec,
                ))
            except BaseException as exc:  # handed back to the caller
                done.put(exc)


_spawner = _Spawner()


def _sweep_stale(base: Path) -> None:
    """Remove runtime directories left by a process that died by SIGKILL."""
    for d in base.glob("fleet-engine-*-*"):
        try:
            pid = int(d.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


class _EngineAPI(docker.APIClient):
    """An APIClient whose every request first makes sure the connection is up."""

    def __init__(self, conn: "EngineConnection", **kwargs: Any) -> None:
        self._fleet_conn = conn  # before the base constructor, which may already call request()
        super().__init__(**kwargs)

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]  # requests' own signature
        conn = self._fleet_conn
        conn._ensure()
        try:
            return super().request(method, url, *args, **kwargs)
        except (requests.exceptions.ReadTimeout, EngineUnreachable):
            raise  # the engine answered the connection; a slow call is the caller's to judge
        except (requests.exceptions.ConnectionError, OSError) as exc:
            conn._settle()
            if conn.dropped() and method.upper() in ("GET", "HEAD"):
                try:
                    conn._ensure()  # reconnect, and retry a read once
                except EngineUnreachable as failed:
                    raise EngineUnreachable(conn.name, f"the ssh connection to {conn.address.host} dropped; "
                                                       f"reconnecting: {failed.reason}") from None
                try:
                    return super().request(method, url, *args, **kwargs)
                except (requests.exceptions.ConnectionError, OSError) as again:
                    exc = again
            raise EngineUnreachable(conn.name, conn._reason(exc)) from None


class EngineConnection:
    """One connection to one engine for the life of a command (see the module doc)."""

    def __init__(self, address: EngineAddress, *, name: str | None = None, timeout: float = 120,
                 connect_timeout: float = 10, max_pool_size: int = 10, ssh: str = "ssh",
                 keepalive: tuple[int, int] = (5, 3)) -> None:
        self.address = address
        self.name = name or address.value
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_pool_size = max_pool_size
        self.ssh = ssh
        # ssh's ServerAliveInterval and -CountMax: a server silent for interval*count seconds
        # (frozen, cut off) ends ssh, and the calls waiting on it fail then
        self.keepalive = keepalive
        self.connects = 0  # ssh processes started so far (1 + reconnects)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._dir: Path | None = None
        self._log_at = 0
        self._api: _EngineAPI | None = None
        self._closed = False

    # -- the public side
    def open(self) -> "EngineConnection":
        """Connect now (idempotent): for ssh, start ssh and check the engine answers."""
        self._ensure()
        return self

    @property
    def api(self) -> docker.APIClient:
        self._ensure()
        assert self._api is not None
        return self._api

    @property
    def client(self) -> docker.DockerClient:
        """A DockerClient over the same connection (no new connection)."""
        client = docker.DockerClient.__new__(docker.DockerClient)
        client.api = self.api
        return client

    @property
    def ssh_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def socket_path(self) -> Path | None:
        return self._dir / "docker.sock" if self._dir is not None else None

    def dropped(self) -> bool:
        """An ssh connection that was up and is gone."""
        return self._proc is not None and self._proc.poll() is not None

    def close(self) -> None:
        """End ssh, remove its socket and directory, close the client (idempotent)."""
        with self._lock:
            self._closed = True
            self._stop_ssh()
            if self._api is not None:
                self._api.close()
            self._release_dir()

    def __enter__(self) -> "EngineConnection":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the inside
    def _ensure(self) -> None:
        with self._lock:
            if self._closed:
                raise EngineUnreachable(self.name, "the connection was closed")
            # the directory (so the socket path, and the client on it) stays the same for the
            # connection's life, across reconnects; close() (or the exit) removes it
            self._connect()

    def _release_dir(self) -> None:
        _open.discard(self)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _connect(self) -> None:
        if self.address.scheme == "ssh":
            if self._proc is None or self._proc.poll() is not None:
                self._start_ssh()
            elif self._api is not None:
                return
        if self._api is None:
            self._api = self._make_api()
            self._handshake()

    def _make_api(self) -> _EngineAPI:
        tls: Any = False
        if self.address.scheme == "ssh":
            base_url = f"unix://{self.socket_path}"
        elif self.address.scheme == "unix":
            base_url = self.address.url
        else:
            base_url = self.address.url
            t = self.address.tls
            if t is not None:
                tls = docker.tls.TLSConfig(
                    client_cert=(t.cert, t.key) if t.cert and t.key else None,
                    ca_cert=t.ca if t.verify else None, verify=t.verify,
                )
        # a fixed version here (no call while constructing); the engine's own is set by _handshake
        return _EngineAPI(self, base_url=base_url, version="1.41", timeout=self.timeout, tls=tls,
                          max_pool_size=self.max_pool_size)

    def _handshake(self) -> None:
        """The first call: the engine answers within connect_timeout, and its API version."""
        assert self._api is not None
        api = self._api
        try:
            res = requests.Session.request(api, "GET", api._url("/version", versioned_api=False), timeout=self.connect_timeout)
            res.raise_for_status()
            api._version = str(res.json()["ApiVersion"])
        except (requests.exceptions.RequestException, OSError, ValueError, KeyError) as exc:
            self._api = None
            api.close()
            raise EngineUnreachable(self.name, self._reason(exc)) from None

    def _start_ssh(self) -> None:
        self._stop_ssh()
        if self._dir is None:
            base = Path(tempfile.gettempdir())
            if len(str(base)) > 60:  # unix socket paths are short (104-108 bytes)
                base = Path("/tmp")
            _sweep_stale(base)
            self._dir = Path(tempfile.mkdtemp(prefix=f"fleet-engine-{os.getpid()}-", dir=base))  # mode 0700
            _open.add(self)
            _install_cleanup()
        sock = self._dir / "docker.sock"
        log_path = self._dir / "ssh.log"
        argv = [
            self.ssh, "-N", "-T",
            "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, int(self.connect_timeout))}",
            "-o", f"ServerAliveInterval={self.keepalive[0]}", "-o", f"ServerAliveCountMax={self.keepalive[1]}",
            "-o", "StreamLocalBindUnlink=yes", "-o", "StreamLocalBindMask=0177",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",  # this process owns its forward
            "-L", f"{sock}:{REMOTE_SOCKET}",
            *self.address.ssh_args(),
        ]
        with open(log_path, "ab") as log:
            self._log_at = log.tell()
            try:
                self._proc = _spawner.popen(argv, log)
            except OSError as exc:
                raise EngineUnreachable(self.name, f"cannot run {self.ssh}: {exc.strerror or exc}") from None
        self.connects += 1
        deadline = time.monotonic() + self.connect_timeout + 2
        while not sock.exists():
            if self._proc.poll() is not None:
                reason = self._ssh_said() or f"ssh exited with code {self._proc.returncode}"
                self._proc = None
                raise EngineUnreachable(self.name, reason)
            if time.monotonic() > deadline:
                self._stop_ssh()
                raise EngineUnreachable(self.name, f"ssh {self.address.host} did not connect within {self.connect_timeout:g}s")
            time.sleep(0.02)
        if self._api is not None:  # a reconnect: the client stays, the engine must answer again
            self._handshake()

    def _stop_ssh(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        if self._dir is not None:
            (self._dir / "docker.sock").unlink(missing_ok=True)

    def _settle(self) -> None:
        """After a failed call: give an ssh that is exiting a moment to be seen as gone."""
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(0.5)
            except subprocess.TimeoutExpired:
                pass

    def _ssh_said(self) -> str:
        """The last meaningful line ssh wrote since it was started."""
        if self._dir is None:
            return ""
        try:
            with open(self._dir / "ssh.log", "rb") as f:
                f.seek(self._log_at)
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        lines = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("Warning: Permanently added")]
        if not lines:
            return ""
        last = lines[-1][:200]
        return last if last.startswith("ssh: ") else f"ssh: {last}"

    def _reason(self, exc: BaseException) -> str:
        if self.address.scheme == "ssh":
            said = self._ssh_said()
            if self.dropped():
                return f"the ssh connection to {self.address.host} dropped" + (f" ({said})" if said else "")
            if "open failed" in said:
                return f"the Docker engine behind ssh {self.address.host} does not answer ({said})"
            if "Connection aborted" in str(exc) or "RemoteDisconnected" in str(exc):
                # the ssh was already replaced by another call's reconnect, or the engine went away mid-call
                return f"the call was cut off midway (the ssh connection to {self.address.host} or its engine went away)"
        text = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        if self.address.scheme == "unix" and not Path(self.address.path).exists():
            return f"no socket at {self.address.path}"
        return text
