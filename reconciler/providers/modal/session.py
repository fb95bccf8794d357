"""The Modal provider's connection and sandbox plumbing: the client (reached
quickly or refused with one line), Modal's exceptions as one line each, sandbox
handles by id and by name, tag ownership checks, short commands run in a
sandbox, the apps a fleet uses, and the agent supervisor's start/stop/tag steps
shared by the host and agent code.

`modal` is imported only when this provider is used (a fleet with a Modal host).

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit

from reconciler.core import labels as L
from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.model import ModalOptions
from reconciler.providers.modal import local, router, sh
from reconciler.providers.modal.tags import AGENT_TAG, WORKDIR, _flags, agent_tag, app_name, parse_agent_tag

AUTH_HINT = "set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or run `modal token new`"
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = float(os.environ.get("FLEET_MODAL_CONNECT_TIMEOUT") or 15)
UPLOAD_CHUNK = 1 << 20


def _modal():
    import modal

    return modal


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]


class ModalSession:
    """Plumbing shared by the Modal provider's parts."""

    def __init__(self, client: Any = None):
        self._client = client
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._handles: dict[str, Any] = {}  # sandbox id -> Sandbox
        self._by_name: dict[tuple[str, str], str] = {}  # (fleet, host) -> sandbox id
        self._agent_ids: dict[tuple[str, str], str] = {}  # (fleet, agent) -> observed id, set on create
        self._ended: set[str] = set()  # sandboxes this process terminated

    # ------------------------------------------------------------------ plumbing

    @property
    def server_url(self) -> str:
        if self._client is not None and getattr(self._client, "server_url", None):
            return str(self._client.server_url)
        return str(_modal().config.config["server_url"])

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        modal = _modal()
        url = self.server_url
        parts = urlsplit(url)
        host = parts.hostname or url
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:  # the SDK retries an unreachable server for about a minute: ask once, quickly
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise FleetError(f"cannot reach Modal at {url} ({reason}); check the network (or MODAL_SERVER_URL)") from None
        # the handshake too: a server that accepts connections but never answers
        # would otherwise cost a minute of the SDK's retries
        outcome: dict[str, Any] = {}

        def connect() -> None:
            try:
                outcome["client"] = modal.Client.from_env()
            except BaseException as failure:  # handed to the caller below
                outcome["error"] = failure

        worker = threading.Thread(target=connect, name="fleet-modal-connect", daemon=True)
        worker.start()
        worker.join(HANDSHAKE_TIMEOUT)
        if worker.is_alive():
            raise FleetError(f"Modal at {url} did not answer within {HANDSHAKE_TIMEOUT:g}s; check the network "
                             "(or MODAL_SERVER_URL) and try again")
        error = outcome.get("error")
        if isinstance(error, modal.exception.AuthError):
            raise FleetError(f"no Modal credentials: {AUTH_HINT}") from None
        if isinstance(error, modal.exception.Error):
            raise FleetError(f"cannot use Modal at {url}: {_first_line(error)}") from None
        if error is not None:
            raise error
        return outcome["client"]

    @contextmanager
    def _errors(self, resource: str, host: str | None = None) -> Iterator[None]:
        """Modal's exceptions as one line each, saying what to do."""
        modal = _modal()
        E = modal.exception
        try:
            yield
        except FleetError:
            raise
        except E.AuthError as exc:
            raise ProviderError(resource, f"Modal refused the credentials ({_first_line(exc)}): {AUTH_HINT}") from None
        except E.ResourceExhaustedError as exc:
            raise ProviderError(
                resource, f"Modal quota or rate limit reached ({_first_line(exc)}); stop other sandboxes or raise your "
                "limits in Modal's settings, then run `fleet apply` again"
            ) from None
        except (E.SandboxTimeoutError, E.SandboxTerminatedError) as exc:
            hint = f" (raise hosts.{host}.timeout, at most 86400)" if host else ""
            raise ProviderError(
                resource, f"the sandbox has ended ({_first_line(exc)}); `fleet apply` re-creates it{hint}"
            ) from None
        except E.ImageBuildError as exc:
            raise ProviderError(resource, f"image build failed on Modal: {_first_line(exc)}") from None
        except E.NotFoundError as exc:
            raise ProviderError(resource, f"not found on Modal ({_first_line(exc)}); run `fleet apply` again") from None
        except E.ConnectionError as exc:
            raise ProviderError(resource, f"lost the connection to Modal ({_first_line(exc)}); try again") from None
        except E.Error as exc:
            raise ProviderError(resource, f"Modal: {exc.__class__.__name__}: {_first_line(exc)}") from None
        except (OSError, TimeoutError) as exc:
            raise ProviderError(resource, f"cannot reach Modal ({_first_line(exc)}); try again") from None

    def _host_lock(self, sandbox_id: str) -> threading.Lock:
        """Tags are replaced whole: changes to one sandbox's tags are serialised."""
        with self._lock:
            return self._host_locks.setdefault(sandbox_id, threading.Lock())

    def _remember(self, fleet: str, host: str, sb: Any) -> None:
        self._handles[sb.object_id] = sb
        self._by_name[(fleet, host)] = sb.object_id

    def _sandbox(self, sandbox_id: str, resource: str) -> Any:
        if sandbox_id in self._handles:
            return self._handles[sandbox_id]
        modal = _modal()
        with self._errors(resource):
            try:
                sb = modal.Sandbox.from_id(sandbox_id, client=self.client)
            except modal.exception.NotFoundError:
                raise ProviderError(resource, f"its sandbox {sandbox_id} is gone; run `fleet apply` first") from None
        self._handles[sandbox_id] = sb
        return sb

    def _existing(self, sandbox_id: str) -> Any:
        """The sandbox's handle; modal's NotFoundError when it is gone (the caller decides)."""
        if sandbox_id not in self._handles:
            self._handles[sandbox_id] = _modal().Sandbox.from_id(sandbox_id, client=self.client)
        return self._handles[sandbox_id]

    def _host_sandbox(self, fleet: str, host: str, opts: ModalOptions | None, resource: str) -> Any:
        sid = self._by_name.get((fleet, host))
        if sid is not None:
            return self._handles[sid]
        modal = _modal()
        with self._errors(resource, host):
            try:
                sb = modal.Sandbox.from_name(
                    app_name(fleet, opts), host, environment_name=opts.environment if opts else None, client=self.client
                )
            except modal.exception.NotFoundError:
                raise ProviderError(resource, f"host {host} has no running sandbox; run `fleet apply` first") from None
        self._remember(fleet, host, sb)
        return sb

    def _owned_tags(self, sb: Any, fleet: str, resource: str) -> dict[str, str]:
        tags = dict(sb.get_tags())
        if tags.get(L.PROJECT) != fleet or tags.get(L.KIND) != "host":
            raise ProviderError(
                resource, f"sandbox {sb.object_id} is not tagged for fleet {fleet}; not touching it"
            )
        return tags

    def _run(self, sb: Any, argv: list[str], stdin: bytes | None = None, timeout: int = 120) -> tuple[int, bytes, bytes]:
        """Run a short command in the sandbox; (exit code, stdout, stderr)."""
        p = sb.exec(*argv, text=False, timeout=timeout)
        if stdin:
            for i in range(0, len(stdin), UPLOAD_CHUNK):
                p.stdin.write(stdin[i:i + UPLOAD_CHUNK])
                p.stdin.drain()
        p.stdin.write_eof()
        p.stdin.drain()
        out = p.stdout.read()
        err = p.stderr.read()
        return p.wait(), out, err

    # ------------------------------------------------------------------ apps

    def _apps(self, fleet: str) -> list[tuple[str, str | None, str | None]]:
        """The apps to observe: the default one and every app this fleet used here."""
        seen: dict[tuple[str, str | None], str | None] = {(f"fleet-{fleet}", None): None}
        for name, env, app_id in local.apps(fleet, self.server_url):
            seen[(name, env)] = app_id
        return [(name, env, app_id) for (name, env), app_id in seen.items()]

    def _app_id(self, fleet: str, name: str, environment: str | None, create: bool) -> str | None:
        modal = _modal()
        try:
            app = modal.App.lookup(name, environment_name=environment, create_if_missing=create, client=self.client)
        except modal.exception.NotFoundError:
            return None
        local.remember_app(fleet, self.server_url, environment, name, app.app_id)
        return app.app_id

    # ------------------------------------------------------------------ agent supervisors

    def _start(self, sb: Any, agent: str, resource: str) -> None:
        """Start the agent's supervisor as a long-lived exec (it keeps the sandbox
        busy while the agent runs) and wait until it is up."""
        modal = _modal()
        devnull = modal.stream_type.StreamType.DEVNULL
        sb.exec("sh", sh.SUPERVISOR_PATH, agent, workdir=WORKDIR, stdout=devnull, stderr=devnull)
        code, out, err = self._run(sb, ["sh", "-c", sh.READY, "fleet-ready", agent], timeout=60)
        if code != 0:
            why = (out + err).decode(errors="replace").strip()[-200:] or f"exit code {code}"
            raise ProviderError(resource, f"its supervisor did not start in the sandbox ({why})")

    def _ensure_router(self, sb: Any, resource: str, required: bool, fresh: bool = False) -> None:
        """Start the host's port router unless it runs (router.py). Without
        python3 in the image a host still works, but only for agents without ports."""
        code, out, err = self._run(sb, router.ensure_argv(fresh), stdin=router.ROUTER.encode(), timeout=60)
        if code == 127 and not required:
            return
        if code != 0:
            why = (out + err).decode(errors="replace").strip()[-200:] or f"exit code {code}"
            hint = "; agents with ports on a Modal host need python3 in its image" if code == 127 else ""
            raise ProviderError(resource, f"the host's port router did not start ({why}){hint}")

    def _stop(self, sb: Any, agent: str, resource: str, script: str = sh.STOP) -> None:
        code, out, err = self._run(sb, ["sh", "-c", script, "fleet-stop", agent], timeout=60)
        if code != 0:
            why = (out + err).decode(errors="replace").strip()[-200:] or f"exit code {code}"
            raise ProviderError(resource, f"could not stop it in the sandbox ({why})")

    def _set_agent_tag(self, sb: Any, fleet: str, agent: str, resource: str, value: str | None = None,
                       running: bool | None = None) -> None:
        """Change one agent's tag: set it to `value`, remove it (value None and
        running None), or flip its running flag. Tags are replaced whole, so the
        read-modify-write is serialised per sandbox (execs are not)."""
        with self._host_lock(sb.object_id):
            tags = self._owned_tags(sb, fleet, resource)
            key = AGENT_TAG + agent
            if running is not None:
                spec_hash, gen, flags = self._agent_entry(tags, agent, resource)
                value = agent_tag(spec_hash, gen, _flags(running, flags))
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
            sb.set_tags(tags)

    def _agent_entry(self, tags: dict[str, str], agent: str, resource: str) -> tuple[str, str, str]:
        value = tags.get(AGENT_TAG + agent)
        if value is None:
            raise ProviderError(resource, "is no longer on its host; run `fleet apply` first")
        return parse_agent_tag(value)

