"""The Docker provider's connection to the engine: the client (created on first
use), error translation into one line per problem, and the checks every call on
an existing container makes (is it ours, does it run).

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Callable

from reconciler.core import labels as L
from reconciler.core.errors import EngineUnavailable, ProviderError
from reconciler.core.model import ObservedAgent

STOP_TIMEOUT = 10
_CONFLICT_RE = re.compile(r'container name "/?([^"]+)" is already in use by container "([0-9a-f]+)"')


def connect(parallel: int = 8) -> Any:
    """A docker client sized for `parallel` concurrent calls; EngineUnavailable
    (saying how to start one) when no engine answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(max_pool_size=max(parallel + 2, 10), timeout=120)
        client.api.ping()
    except DockerException as exc:
        raise EngineUnavailable(
            "no Docker engine answers "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0][:160]}). "
            "Start Docker (on Debian as root: `make engine`, or `dockerd &`), or set DOCKER_HOST."
        ) from None
    return client


def raw_socket(sock: Any) -> Any:
    """The socket under docker-py's socket wrapper (attach and exec hand back either)."""
    return getattr(sock, "_sock", sock)


def early_bytes(sock: Any) -> bytes:
    """The stream's first bytes when they came with the response headers: the HTTP
    reader that parsed the headers of the hijacked (attach/exec) connection buffered
    them, so the raw socket never returns them (a process that ends quickly on a busy
    machine: `fleet exec` printed nothing). Read before the raw socket."""
    fp = getattr(getattr(getattr(getattr(sock, "_response", None), "raw", None), "_fp", None), "fp", None)
    if fp is None or not hasattr(fp, "peek"):
        return b""
    raw = raw_socket(sock)
    timeout = raw.gettimeout()
    try:
        raw.setblocking(False)  # only what is buffered (or already arrived): never wait here
        data: bytes = fp.peek(0)
        return fp.read(len(data)) if data else b""
    except OSError:
        return b""
    finally:
        raw.settimeout(timeout)


def connect_engine(engine: str, parallel: int = 8) -> Any:
    """A docker client on the engine `engine` (an `engine:` value): every call over
    one connection for the life of the process (connect.py); EngineUnreachable
    (a FleetError naming the engine) when it cannot be reached."""
    from reconciler.core.errors import FleetError
    from reconciler.providers.docker.connect import EngineConnection, parse_engine

    address = parse_engine(engine)
    if isinstance(address, str):
        raise FleetError(f"engine {engine}: {address}")
    conn = EngineConnection(address, name=engine, max_pool_size=max(parallel + 2, 10))
    try:
        return conn.open().client
    except BaseException:
        conn.close()  # its socket directory goes now, not at exit (a watcher retries for hours)
        raise


class DockerSession:
    """Plumbing shared by the Docker provider's parts. `engine`: the `engine:` this
    provider works on (None: the local engine from the environment)."""

    def __init__(self, client: Any = None, parallel: int = 8, engine: str | None = None):
        self._client = client
        self._parallel = parallel
        self._lock = threading.Lock()
        self.engine = engine

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect(self._parallel) if self.engine is None else connect_engine(self.engine, self._parallel)
        return self._client

    @property
    def api(self) -> Any:
        return self.client.api

    def _call(self, resource: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from docker.errors import APIError, DockerException
        from requests.exceptions import ConnectionError as ReqConnectionError

        try:
            return fn(*args, **kwargs)
        except APIError as exc:
            text = (exc.explanation or str(exc)).strip()
            m = _CONFLICT_RE.search(text)
            if exc.status_code == 409 and m:
                raise ProviderError(resource, self._conflict(m.group(1), m.group(2))) from None
            raise ProviderError(resource, text) from None
        except (ReqConnectionError, DockerException) as exc:
            raise ProviderError(resource, f"Docker engine error: {str(exc).splitlines()[0][:200]}") from None

    def _conflict(self, name: str, holder: str) -> str:
        """Why a container name is taken: by one of fleet's own (an interrupted
        run's create finishing after it was killed: the next apply adopts it),
        or by a stranger (never touched)."""
        try:
            info = self.api.inspect_container(holder)
            lab = info.get("Config", {}).get("Labels") or {}
            owner = lab.get(L.PROJECT) if L.ownership(lab.get(L.PROJECT) or "", lab, info.get("Name", "")) else None
        except Exception:
            owner = None
        if owner:
            return (
                f"the container name {name} is already held by container {holder[:12]} of fleet {owner} "
                "(created by an interrupted run?); run `fleet apply` again to take it into account"
            )
        return (
            f"the container name {name} is taken by container {holder[:12]}, which fleet did not "
            "create for this fleet; remove or rename it (fleet never touches containers it does not own)"
        )

    def inspect(self, container_id: str) -> dict[str, Any]:
        """Full details of one container (for status; not part of observation)."""
        info: dict[str, Any] = self._call(container_id[:12], self.api.inspect_container, container_id)
        return info

    def _running(self, agent: ObservedAgent, what: str) -> dict[str, Any]:
        """The container's details, refusing clearly when it cannot take `what`."""
        from docker.errors import NotFound

        try:
            info: dict[str, Any] = self.api.inspect_container(agent.id)
        except NotFound:
            raise ProviderError(f"agent {agent.name}", f"its container is gone; run `fleet apply` first ({what} not done)") from None
        state = info.get("State", {})
        if state.get("Restarting"):
            raise ProviderError(
                f"agent {agent.name}",
                f"is restarting (last exit code {state.get('ExitCode')}); {what} not done, try again when it runs",
            )
        if not state.get("Running"):
            raise ProviderError(
                f"agent {agent.name}",
                f"is not running ({state.get('Status')}, exit code {state.get('ExitCode')}); {what} not done; "
                "`fleet apply` starts it",
            )
        return info

    def _remove(self, resource: str, container_id: str, fleet: str) -> None:
        """Stop gracefully, then remove; a container already gone is fine. The
        fleet label is checked again, so a reused id can never hit a stranger."""
        from docker.errors import APIError, NotFound

        try:
            info = self.api.inspect_container(container_id)
        except NotFound:
            return
        if not L.ownership(fleet, info.get("Config", {}).get("Labels") or {}, info.get("Name", "")):
            raise ProviderError(resource, f"container {container_id[:12]} is not one fleet created for fleet {fleet}; not touching it")
        try:
            if info.get("State", {}).get("Running"):
                self.api.stop(container_id, timeout=STOP_TIMEOUT)
            self.api.remove_container(container_id, force=True)
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return
            raise ProviderError(resource, (exc.explanation or str(exc)).strip()) from None
