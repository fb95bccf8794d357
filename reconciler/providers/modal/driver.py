"""The Modal provider: a shared host is a named, tagged Modal Sandbox; each agent
on it is a process started with `Sandbox.exec` under a small supervisor (see
modal_sh.py), so agents share the sandbox's /workspace, network and bill.

The sandbox's tags are the state, as Docker labels are for the Docker provider:
the same keys (project, kind, host, spec-hash) plus one tag per agent holding its
spec hash, a generation and flags. Tag values stay within 63 characters of
`[A-Za-z0-9._-]`: a sha256 is stored in base64url (43 characters), whole, so the
hashes compared by reconcile are the same as Docker's.

Observation uses the public SDK only: one `Sandbox.list(app_id, tags)` per app
(which pages until an empty page) plus one `get_tags()` per host sandbox, since
the listing drops tags. That scales with hosts, not agents, and never execs.
App ids, tunnel URLs (fixed at creation) and specs behind hashes are cached under
$FLEET_HOME (modal_local.py), so a no-op apply makes no other call.

`modal` is imported only when this provider is used (a fleet with a Modal host).
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from reconciler.core import labels as L
from reconciler.state import usage
from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.outcome import Outcome
from reconciler.core.model import MODAL_ROUTER_PORT, Desired, DesiredAgent, DesiredHost, ModalOptions, ObservedAgent, ObservedHost
from reconciler.providers.modal import local
from reconciler.providers.modal import router
from reconciler.providers.modal import sh

AGENT_TAG = L.PREFIX + "agent."  # + agent name -> "<spec hash b64>.<generation>.<flags>"
PORTS_TAG = L.PREFIX + "ports"  # host: its tunnelled ports: the port router's ("3000.8080" before it)
CREATED_TAG = L.PREFIX + "created"  # host: epoch seconds
PENDING = "pending"  # spec-hash of a host still being set up (workspace upload)
WORKDIR = "/workspace"
AUTH_HINT = "set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or run `modal token new`"
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = float(os.environ.get("FLEET_MODAL_CONNECT_TIMEOUT") or 15)
UPLOAD_CHUNK = 1 << 20


def _modal():
    import modal

    return modal


def _b64(hex_hash: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_hash)).rstrip(b"=").decode()


def _hex(b64: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
    except (ValueError, TypeError):
        return ""
    return raw.hex() if len(raw) == 32 else ""


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def _generation() -> str:
    """A new agent incarnation: its start time (base36 seconds) and 2 random characters."""
    return _b36(int(time.time())) + "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(2))


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat() if epoch else None


def _gen_time(gen: str) -> float | None:
    try:
        return float(int(gen[:-2], 36))
    except ValueError:
        return None


def agent_tag(spec_hash: str, gen: str, flags: str) -> str:
    return f"{_b64(spec_hash)}.{gen}.{flags}"


def parse_agent_tag(value: str) -> tuple[str, str, str]:
    """(hex spec hash, generation, flags) from an agent tag value."""
    parts = value.split(".")
    if len(parts) != 3:
        return "", "", ""
    return _hex(parts[0]), parts[1], parts[2]


def _flags(running: bool, flags: str) -> str:
    """Agent tag flags: r (running) or s (stopped by fleet), m (has a first message)."""
    return ("r" if running else "s") + ("m" if "m" in flags else "")


def app_name(fleet: str, opts: ModalOptions | None) -> str:
    return (opts.app if opts and opts.app else None) or f"fleet-{fleet}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0][:300]


class ModalProvider:
    """Realises shared hosts as Modal sandboxes and agents as supervised execs."""

    name = "modal"

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
            except BaseException as exc:  # handed to the caller below
                outcome["error"] = exc

        worker = threading.Thread(target=connect, name="fleet-modal-connect", daemon=True)
        worker.start()
        worker.join(HANDSHAKE_TIMEOUT)
        if worker.is_alive():
            raise FleetError(f"Modal at {url} did not answer within {HANDSHAKE_TIMEOUT:g}s; check the network "
                             "(or MODAL_SERVER_URL) and try again")
        exc = outcome.get("error")
        if isinstance(exc, modal.exception.AuthError):
            raise FleetError(f"no Modal credentials: {AUTH_HINT}") from None
        if isinstance(exc, modal.exception.Error):
            raise FleetError(f"cannot use Modal at {url}: {_first_line(exc)}") from None
        if exc is not None:
            raise exc
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

    # ------------------------------------------------------------------ observe

    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]:
        modal = _modal()
        hosts: list[ObservedHost] = []
        agents: list[ObservedAgent] = []
        with self._errors(f"fleet {fleet} on Modal"):
            for name, env, app_id in self._apps(fleet):
                found = None
                if app_id is not None:
                    try:
                        found = self._list(app_id, fleet)
                    except modal.exception.NotFoundError:
                        found = None  # a cached id of an app that is gone: look it up again
                if found is None:
                    app_id = self._app_id(fleet, name, env, create=False)
                    found = self._list(app_id, fleet) if app_id else []
                for sb in found:
                    tags = dict(sb.get_tags())
                    if tags.get(L.PROJECT) != fleet or tags.get(L.KIND) != "host" or not tags.get(L.HOST):
                        continue
                    host, host_agents = self._records(fleet, sb, tags)
                    self._remember(fleet, host.name, sb)
                    hosts.append(host)
                    agents.extend(host_agents)
        return hosts, agents

    def _list(self, app_id: str, fleet: str) -> list[Any]:
        modal = _modal()
        return list(modal.Sandbox.list(app_id=app_id, tags={L.PROJECT: fleet, L.KIND: "host"}, client=self.client))

    def _records(self, fleet: str, sb: Any, tags: dict[str, str]) -> tuple[ObservedHost, list[ObservedAgent]]:
        name = tags[L.HOST]
        sid = sb.object_id
        raw_hash = tags.get(L.SPEC_HASH, "")
        spec_hash = "" if raw_hash == PENDING else _hex(raw_hash)
        ports = [int(p) for p in tags.get(PORTS_TAG, "").split(".") if p.isdigit()]
        urls: dict[int, str] = {}
        if ports:
            cached = local.tunnels(fleet, sid)
            if cached is None:
                cached = {p: t.url for p, t in sb.tunnels(timeout=30).items()}
                local.remember_tunnels(fleet, sid, cached)
            urls = cached
        created = _iso(float(tags[CREATED_TAG])) if tags.get(CREATED_TAG, "").isdigit() else None
        agents: list[ObservedAgent] = []
        on_host: dict[str, str] = {}
        for key, value in sorted(tags.items()):
            if not key.startswith(AGENT_TAG):
                continue
            agent = key[len(AGENT_TAG):]
            a_hash, gen, flags = parse_agent_tag(value)
            on_host[agent] = a_hash
            running = "r" in flags
            agents.append(
                ObservedAgent(
                    name=agent, host=name, provider="modal", id=f"{sid}:{agent}:{gen}",
                    state="running" if running else "exited", spec_hash=a_hash,
                    spec=local.spec(fleet, a_hash) if a_hash else {}, created=_iso(_gen_time(gen)),
                    status=f"supervised in sandbox {sid}" if running else "stopped by fleet",
                    host_id=sid, message_pending="m" in flags,
                )
            )
        host = ObservedHost(
            name=name, provider="modal", id=sid, state="running", spec_hash=spec_hash,
            spec=local.spec(fleet, spec_hash) if spec_hash else {}, urls=urls, created=created, agents=on_host,
        )
        return host, agents

    # ------------------------------------------------------------------ hosts

    def _image(self, fleet: str, host: DesiredHost) -> tuple[Any, str | None]:
        """The image to start from, and the snapshot id when restoring one."""
        modal = _modal()
        opts = host.modal or ModalOptions()
        if opts.restore == "latest":
            snap = local.latest_snapshot(fleet, host.name)
            if snap is not None:
                return modal.Image.from_id(snap["image_id"], client=self.client), str(snap["image_id"])
        b = host.image.build
        if b is not None:
            return modal.Image.from_dockerfile(
                str(Path(b.context) / b.dockerfile), context_dir=str(b.context), build_args=dict(b.args)
            ), None
        return modal.Image.from_registry(host.image.ref), None

    def create_host(self, desired: Desired, host: DesiredHost) -> Outcome:
        modal = _modal()
        fleet = desired.fleet
        resource = f"host {host.name}"
        opts = host.modal or ModalOptions()
        app = app_name(fleet, opts)
        usage.record(fleet, "modal")
        tags = {
            L.PROJECT: fleet, L.KIND: "host", L.HOST: host.name, L.SPEC_HASH: PENDING,
            PORTS_TAG: str(MODAL_ROUTER_PORT), CREATED_TAG: str(int(time.time())),
        }
        with self._errors(resource, host.name):
            app_obj = modal.App.lookup(app, environment_name=opts.environment, create_if_missing=True, client=self.client)
            local.remember_app(fleet, self.server_url, opts.environment, app, app_obj.app_id)
            image, restored = self._image(fleet, host)
            try:
                sb = modal.Sandbox.create(
                    app=app_obj, name=host.name, tags=tags, image=image, timeout=opts.timeout,
                    idle_timeout=opts.idle_timeout, workdir=WORKDIR, encrypted_ports=[MODAL_ROUTER_PORT],
                    cpu=opts.cpu, memory=opts.memory, region=opts.region, client=self.client,
                )
            except modal.exception.AlreadyExistsError:
                raise self._name_taken(fleet, host, app) from None
            except modal.exception.NotFoundError as exc:
                if restored:
                    raise ProviderError(
                        resource, f"snapshot {restored} is gone on Modal ({_first_line(exc)}); remove "
                        f"hosts.{host.name}.restore to start from the image"
                    ) from None
                raise
            self._remember(fleet, host.name, sb)
            try:
                tunnels = {p: t.url for p, t in sb.tunnels(timeout=60).items()}
                local.remember_tunnels(fleet, sb.object_id, tunnels)
                self._ensure_router(sb, resource, required=False, fresh=True)
                if host.workspace is not None and restored is None:
                    self._upload(sb, Path(host.workspace.path), resource)
                tags[L.SPEC_HASH] = _b64(host.spec_hash)
                sb.set_tags(tags)
            except BaseException:
                try:
                    sb.terminate()
                except Exception:
                    pass
                raise
        local.remember_spec(fleet, host.spec_hash, host.spec())
        note = f"host {host.name}: started from snapshot {restored} (restore: latest)" if restored else None
        return Outcome(note=note, id=sb.object_id, urls=tunnels)  # its tunnel URLs: routes go there

    def _name_taken(self, fleet: str, host: DesiredHost, app: str) -> ProviderError:
        modal = _modal()
        resource = f"host {host.name}"
        env = host.modal.environment if host.modal else None
        try:
            other = modal.Sandbox.from_name(app, host.name, environment_name=env, client=self.client)
            tags = other.get_tags()
        except Exception:
            tags = {}
        if tags.get(L.PROJECT) == fleet and tags.get(L.HOST) == host.name:
            return ProviderError(
                resource, f"a sandbox of this fleet named {host.name} already runs in Modal app {app}; "
                "run `fleet apply` again to pick it up"
            )
        return ProviderError(
            resource, f"the sandbox name {host.name} is taken in Modal app {app} by a sandbox fleet did not create "
            f"for this fleet; terminate it, or set hosts.{host.name}.app to another app"
        )

    def _upload(self, sb: Any, path: Path, resource: str) -> None:
        """Copy a local directory into /workspace: a tar stream into `tar -x` (no
        tools beyond tar are needed in the image)."""
        if not path.is_dir():
            raise ProviderError(resource, f"workspace {path} is not a directory")

        def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as buf:
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(path.iterdir()):
                    tar.add(str(entry), arcname=entry.name, filter=owned_by_root)
            size = buf.tell()
            buf.seek(0)
            p = sb.exec("tar", "-x", "-C", WORKDIR, "-f", "-", text=False, timeout=1800)
            while True:
                chunk = buf.read(UPLOAD_CHUNK)
                if not chunk:
                    break
                p.stdin.write(chunk)
                p.stdin.drain()
            p.stdin.write_eof()
            p.stdin.drain()
            err = p.stderr.read()
            code = p.wait()
        if code != 0:
            why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {code}"]
            hint = "; the host image needs tar" if code in (126, 127) else ""
            raise ProviderError(resource, f"upload of workspace {path} ({size} bytes) failed: {why[0][:200]}{hint}")

    def start_host(self, fleet: str, host: ObservedHost) -> None:
        raise ProviderError(f"host {host.name}", "a Modal sandbox cannot be restarted; `fleet apply --replace` re-creates it")

    def destroy_host(self, fleet: str, host: ObservedHost) -> str | None:
        """Snapshot the filesystem (so no work is lost), then terminate. Returns a
        note naming the snapshot, which is also kept in $FLEET_HOME/snapshots."""
        modal = _modal()
        resource = f"host {host.name}"
        sb = self._sandbox(host.id, resource)
        note = None
        with self._errors(resource, host.name):
            try:
                tags = self._owned_tags(sb, fleet, resource)
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                return None
            if tags.get(L.SPEC_HASH) != PENDING:
                try:
                    image = sb.snapshot_filesystem()
                except (modal.exception.NotFoundError, modal.exception.ConflictError):
                    # it has ended already: nothing to save or stop
                    local.forget_sandbox(fleet, host.id)
                    return None
                except modal.exception.Error as exc:
                    raise ProviderError(
                        resource, f"could not snapshot the filesystem ({_first_line(exc)}); the sandbox is left "
                        f"running so no work is lost: `fleet pull` what you need, then terminate sandbox {host.id} "
                        "in Modal and run `fleet apply` again"
                    ) from None
                app = (host.spec.get("modal") or {}).get("app") or f"fleet-{fleet}"
                path = local.record_snapshot(fleet, host.name, image.object_id, host.id, app)
                note = (f"host {host.name}: filesystem saved as snapshot {image.object_id} (in {path}); "
                        f"`restore: latest` on hosts.{host.name} starts from it")
            sb.terminate()
        local.forget_sandbox(fleet, host.id)
        self._ended.add(host.id)
        self._handles.pop(host.id, None)
        if self._by_name.get((fleet, host.name)) == host.id:
            del self._by_name[(fleet, host.name)]
        return note

    # ------------------------------------------------------------------ agents

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
        """Start the host's port router unless it runs (modal_router.py). Without
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

    def create_agent(self, desired: Desired, agent: DesiredAgent) -> Outcome:
        fleet = desired.fleet
        resource = f"agent {agent.name}"
        host = desired.hosts.get(agent.host or "")
        if host is None or host.provider != "modal":
            raise ProviderError(resource, "an agent on Modal runs on a shared host with provider: modal")
        sb = self._host_sandbox(fleet, host.name, host.modal, resource)
        gen = _generation()
        with self._errors(resource, host.name):
            self._owned_tags(sb, fleet, resource)  # never exec in a sandbox that is not this fleet's
            script = sh.prepare(agent.name, agent.command, agent.restart, dict(agent.env), tuple(agent.ports.values()))
            code, out, err = self._run(sb, ["sh", "-s"], stdin=script.encode(), timeout=60)
            if code != 0:
                why = (out + err).decode(errors="replace").strip()[-200:] or f"exit code {code}"
                hint = "; the host image needs a POSIX sh" if code in (126, 127) else ""
                raise ProviderError(resource, f"could not prepare it in the sandbox ({why}){hint}")
            if agent.ports:
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)
            flags = "r" + ("m" if agent.message else "")
            self._set_agent_tag(sb, fleet, agent.name, resource, agent_tag(agent.spec_hash, gen, flags))
        local.remember_spec(fleet, agent.spec_hash, agent.spec())
        self._agent_ids[(fleet, agent.name)] = f"{sb.object_id}:{agent.name}:{gen}"
        return Outcome(id=self._agent_ids[(fleet, agent.name)])

    def _agent_entry(self, tags: dict[str, str], agent: str, resource: str) -> tuple[str, str, str]:
        value = tags.get(AGENT_TAG + agent)
        if value is None:
            raise ProviderError(resource, "is no longer on its host; run `fleet apply` first")
        return parse_agent_tag(value)

    def start_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._agent_entry(self._owned_tags(sb, fleet, resource), agent.name, resource)
            if agent.spec.get("ports"):  # (re)start the port router too, should it have died
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)
            self._set_agent_tag(sb, fleet, agent.name, resource, running=True)

    def restart_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._owned_tags(sb, fleet, resource)
            self._stop(sb, agent.name, resource)
            if agent.spec.get("ports"):
                self._ensure_router(sb, resource, required=True)
            self._start(sb, agent.name, resource)

    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            self._agent_entry(self._owned_tags(sb, fleet, resource), agent.name, resource)
            self._stop(sb, agent.name, resource)
            self._set_agent_tag(sb, fleet, agent.name, resource, running=False)

    def destroy_agent(self, fleet: str, agent: ObservedAgent) -> None:
        """Stop the agent and forget it; an agent whose sandbox has ended is gone already."""
        modal = _modal()
        resource = f"agent {agent.name}"
        if not agent.host_id or agent.host_id in self._ended:
            return
        try:
            sb = self._sandbox(agent.host_id, resource)
        except ProviderError:
            return
        with self._errors(resource, agent.host):
            try:
                self._owned_tags(sb, fleet, resource)
                self._stop(sb, agent.name, resource, script=sh.DESTROY)
                self._set_agent_tag(sb, fleet, agent.name, resource, None)
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                return  # the sandbox has ended: the agent went with it

    # ------------------------------------------------------------------ working with running agents

    def send_input(self, fleet: str, agent: ObservedAgent, data: bytes) -> None:
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            code, out, err = self._run(sb, ["sh", "-c", sh.SEND, "fleet-send", agent.name], stdin=data, timeout=60)
        if code == 3:
            state = out.decode(errors="replace").split()
            desc = f"{state[0]}, exit code {state[2]}" if len(state) >= 3 else "no supervisor"
            raise ProviderError(resource, f"is not running ({desc}); message not delivered; `fleet apply` starts it")
        if code == 4:
            raise ProviderError(resource, "restarted while the message was typed; it may not have arrived, send it again")
        if code != 0:
            why = err.decode(errors="replace").strip()[-200:] or f"exit code {code}"
            raise ProviderError(resource, f"message not delivered ({why})")

    def send_message(self, fleet: str, agent: DesiredAgent, text: str) -> str:
        """Type an agent's first message; returns the agent's id (sandbox, name, generation)."""
        from reconciler.state.messages import typed

        resource = f"agent {agent.name}"
        agent_id = self._agent_ids.get((fleet, agent.name))
        sid = self._by_name.get((fleet, agent.host or ""))
        if sid is None:
            raise ProviderError(resource, f"host {agent.host} has no running sandbox; first message not delivered")
        if agent_id is None or not agent_id.startswith(sid + ":"):
            sb = self._handles[sid]
            with self._errors(resource, agent.host):
                _, gen, _ = self._agent_entry(dict(sb.get_tags()), agent.name, resource)
            agent_id = f"{sid}:{agent.name}:{gen}"
        obs = ObservedAgent(name=agent.name, host=agent.host, provider="modal", id=agent_id, state="running",
                            spec_hash="", host_id=sid)
        self.send_input(fleet, obs, typed(text))
        return agent_id

    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]:
        """The agent's terminal output (kept in the sandbox by its supervisor)."""
        if since is not None:
            raise FleetError(f"agent {agent.name}: --since is not available for agents on Modal hosts (their "
                             "output is one terminal log without times); use --tail")
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            p = sb.exec("sh", "-c", sh.LOGS, "fleet-logs", agent.name, "all" if tail is None else str(tail),
                        "1" if follow else "0", text=False)
        return self._stream_logs(sb, p, resource, follow)

    def _stream_logs(self, sb: Any, p: Any, resource: str, follow: bool) -> Iterator[bytes]:
        pid: bytes | None = None
        head = b""
        try:
            with self._errors(resource):
                for chunk in p.stdout:
                    if pid is None:
                        head += chunk
                        if b"\n" not in head:
                            continue
                        pid, _, chunk = head.partition(b"\n")
                        if not chunk:
                            continue
                    yield chunk
                code = p.wait()
            if code == 3:
                raise ProviderError(resource, "no output recorded (its supervisor never started); run `fleet apply`")
        finally:
            if follow and pid and pid.strip().isdigit():
                try:  # a follow left behind would keep the sandbox busy
                    sb.exec("kill", pid.strip().decode(), text=False).wait()
                except Exception:
                    pass

    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int:
        """Run `cmd` in the agent's sandbox (in /workspace unless told) with the
        agent's environment, streaming its output; returns its exit code."""
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            argv = ["sh", "-c", sh.in_agent_env(env or {}), "fleet-exec", agent.name, *cmd]
            p = sb.exec(*argv, workdir=workdir or WORKDIR, pty=tty, text=False)
            if tty and interactive:
                p.attach()
                return p.wait()
            pumps = [
                threading.Thread(target=_pump, args=(p.stdout, sys.stdout.buffer), daemon=True),
                threading.Thread(target=_pump, args=(p.stderr, sys.stderr.buffer), daemon=True),
            ]
            for t in pumps:
                t.start()
            if interactive:
                _feed(p, sys.stdin.fileno())
            else:
                p.stdin.write_eof()
                p.stdin.drain()
            for t in pumps:
                t.join()
            return p.wait()

    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24):
        """Join the agent's terminal: its last `replay` lines of output, then our
        keystrokes into its stdin and its output back; the detach keys leave it
        running. The attach ends by itself when the agent's process ends (the
        supervisor's status changes). Returns a terminal.AttachEnd."""
        from reconciler.providers.terminal import AttachEnd, raw_terminal

        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        seq = detach_sequence(detach_keys)
        with self._errors(resource, agent.host):
            p = sb.exec("sh", "-c", sh.ATTACH, "fleet-attach", agent.name, str(max(replay, 0)), text=False)
            out = threading.Thread(target=_pump, args=(p.stdout, sys.stdout.buffer), daemon=True)
            out.start()
            fd = sys.stdin.fileno()
            with raw_terminal(fd):
                detached = _feed(p, fd, stop=seq, alive=out.is_alive)
            out.join(timeout=5)
            code = p.poll()
        if code == 3:
            raise ProviderError(resource, "is not running; `fleet apply` starts it")
        return AttachEnd(detached)

    def details(self, fleet: str, agents: list[ObservedAgent]) -> dict[str, dict[str, Any]]:
        """Per agent: state, restarts, last exit code, since (one exec per host,
        for status; never part of observation)."""
        out: dict[str, dict[str, Any]] = {}
        by_host: dict[str, list[ObservedAgent]] = {}
        for a in agents:
            if a.host_id:
                by_host.setdefault(a.host_id, []).append(a)
        for sid, group in by_host.items():
            try:
                sb = self._sandbox(sid, f"host {group[0].host}")
                with self._errors(f"host {group[0].host}"):
                    code, text, _ = self._run(sb, ["sh", "-c", sh.STATUS], timeout=30)
            except ProviderError:
                continue
            table = sh.parse_status(text.decode(errors="replace"))
            for a in group:
                if a.name in table:
                    row = table[a.name]
                    out[a.id] = {
                        "restarts": row["restarts"], "exit_code": row["exit_code"], "running": row["running"],
                        "state": row["state"], "started_at": _iso(row["since"]), "finished_at": None,
                    }
        return out

    def archive(self, fleet: str, agent: ObservedAgent, path: str = WORKDIR) -> Iterator[bytes]:
        """A tar stream of `path` in the agent's sandbox (members relative to it)."""
        resource = f"agent {agent.name}"
        sb = self._sandbox(agent.host_id or "", resource)
        with self._errors(resource, agent.host):
            p = sb.exec("tar", "-c", "-C", path, "-f", "-", ".", text=False, timeout=3600)
            p.stdin.write_eof()
            p.stdin.drain()

        def stream() -> Iterator[bytes]:
            with self._errors(resource, agent.host):
                for chunk in p.stdout:
                    yield chunk
                code = p.wait()
                err = p.stderr.read().decode(errors="replace").strip()
            if code != 0:
                raise ProviderError(resource, f"tar of {path} failed (exit code {code}: {err[-200:]})")

        return stream()


# ---------------------------------------------------------------------- terminal helpers


def _pump(stream: Any, target: Any) -> None:
    try:
        for chunk in stream:
            if chunk:
                target.write(chunk)
                target.flush()
    except Exception:
        pass


def detach_sequence(keys: str) -> bytes:
    """"ctrl-p,ctrl-q" -> b"\\x10\\x11" (Docker's notation; terminal.parse_detach_keys)."""
    from reconciler.providers.terminal import parse_detach_keys

    return parse_detach_keys(keys)


def _feed(p: Any, fd: int, stop: bytes = b"", alive: Any = None) -> bool:
    """Copy our stdin into the process's stdin until end of file, the `stop`
    sequence (detach: True), or the remote side ending."""
    import select

    from reconciler.providers.terminal import DetachScanner

    scanner = DetachScanner(stop)
    try:
        while alive is None or alive():
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            data = os.read(fd, 4096)
            if not data:
                break
            data, detached = scanner.feed(data)
            if data:
                p.stdin.write(data)
                p.stdin.drain()
            if detached:
                return True
        return False
    finally:
        try:
            p.stdin.write_eof()
            p.stdin.drain()
        except Exception:
            pass


__all__ = ["ModalProvider", "agent_tag", "parse_agent_tag", "app_name", "detach_sequence"]
