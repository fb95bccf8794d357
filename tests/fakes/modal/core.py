"""The fake Modal world: apps, images, volumes and sandboxes, each sandbox a real container.

Both gRPC services (control plane and task command router) are thin translators over
this object; all state lives here, on one asyncio event loop. Docker calls run in a
thread pool. What is real: containers, processes and their I/O and exit codes, the
working directory, published ports behind TLS tunnels, `docker commit` snapshots,
`docker build` of image layers, Docker volumes. What is not: scheduling, regions and
resources (recorded only), registry pulls (every registry image is the local image).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import docker
from grpclib import GRPCError, Status

from modal_proto import api_pb2

from . import docker_ops, ids
from .streams import DockerEndpoint, Process
from .tls import TlsForwarder, TunnelCA

log = logging.getLogger("fake_modal")

T = TypeVar("T")

GS = api_pb2.GenericResult
DEFAULT_ENVIRONMENT = "main"
IMAGE_BUILDER_VERSION = "2025.06"
MAX_TIMEOUT_SECS = 24 * 3600
# The FROM line `Image.debian_slim()` generates (python:<full version>-slim-<debian>).
SDK_BASE_IMAGE = re.compile(r"^python:\d+\.\d+\.\d+-slim-[a-z]+$")


def _from_ref(line: str) -> str:
    """The image named by a Dockerfile FROM line (`FROM [--platform=…] ref [AS name]`)."""
    words = [w for w in line.split()[1:] if not w.startswith("--")]
    return words[0] if words else ""


def _local_froms(commands: list[str], local_image: str) -> list[str]:
    """Point every FROM that names a registry image (not an earlier stage) at the local image:
    nothing can be pulled here."""
    stages: set[str] = set()
    out = []
    for line in commands:
        words = line.split()
        if words and words[0].upper() == "FROM":
            ref = _from_ref(line)
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1])
            if ref not in stages:
                line = line.replace(ref, local_image, 1)
        out.append(line)
    return out


@dataclass
class App:
    id: str
    name: str
    environment: str
    created_at: float


@dataclass
class ImageRecord:
    id: str
    docker_ref: str
    source: str  # what was asked for ("python:3.12-slim", "snapshot of sb-…", …)
    owned: bool  # built or committed by this server (removed at stop)


@dataclass
class VolumeRecord:
    id: str
    name: str
    environment: str
    docker_volume: str | None = None


@dataclass
class Tunnel:
    container_port: int
    host_port: int  # Docker's published port on 127.0.0.1 (plain TCP)
    tls_port: int  # the fake's TLS forwarder on 127.0.0.1
    unencrypted: bool
    forwarder: TlsForwarder

    def proto(self) -> api_pb2.TunnelData:
        t = api_pb2.TunnelData(host="127.0.0.1", port=self.tls_port, container_port=self.container_port)
        if self.unencrypted:
            t.unencrypted_host = "127.0.0.1"
            t.unencrypted_port = self.host_port
        return t


@dataclass
class Exec:
    id: str  # the client's exec id (a uuid)
    process: Process
    args: list[str]
    started_at: float


@dataclass
class Sandbox:
    id: str
    task_id: str
    app_id: str
    environment: str
    name: str | None
    tags: dict[str, str]
    image_id: str
    definition: api_pb2.Sandbox
    created_at: float
    timeout_secs: int
    idle_timeout_secs: int | None
    state: str = "creating"  # creating | running | finished
    container_id: str | None = None
    tunnels: dict[int, Tunnel] = field(default_factory=dict)
    result: api_pb2.GenericResult | None = None
    finished_at: float | None = None
    main: Process | None = None
    execs: dict[str, Exec] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_active: float = field(default_factory=time.monotonic)
    started_mono: float = field(default_factory=time.monotonic)
    open_connections: int = 0
    pending_exit: int | None = None
    snapshots: dict[str, str] = field(default_factory=dict)  # request snapshot_id -> image id

    @property
    def running(self) -> bool:
        return self.state == "running"

    def active_execs(self) -> int:
        return sum(1 for e in self.execs.values() if e.process.exit_code is None)

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def info(self) -> api_pb2.SandboxInfo:
        d = self.definition
        info = api_pb2.SandboxInfo(
            id=self.id,
            created_at=self.created_at,
            app_id=self.app_id,
            name=self.name or "",
            image_id=self.image_id,
            timeout_secs=self.timeout_secs,
            tags=[api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sorted(self.tags.items())],
            tunnels=[t.proto() for t in self.tunnels.values()],
            metadata=self.handle_metadata(),
            regions=list(d.scheduler_placement.regions) if d.HasField("scheduler_placement") else [],
            task_info=api_pb2.TaskInfo(id=self.task_id, sandbox_id=self.id, started_at=self.created_at),
        )
        if self.idle_timeout_secs is not None:
            info.idle_timeout_secs = self.idle_timeout_secs
        if self.result is not None:
            info.task_info.result.CopyFrom(self.result)
            info.task_info.finished_at = self.finished_at or 0.0
        return info

    def handle_metadata(self) -> api_pb2.SandboxHandleMetadata:
        md = api_pb2.SandboxHandleMetadata(app_id=self.app_id)
        if self.result is not None:
            md.result.CopyFrom(self.result)
        return md


class FakeModalCore:
    """All fake Modal state and operations. Create and use it on one event loop."""

    def __init__(
        self,
        *,
        server_id: str,
        default_image: str,
        ca: TunnelCA,
        page_size: int = 10,
        enforce_timeouts: bool = True,
        keep_images: bool = False,
    ) -> None:
        self.server_id = server_id
        self.default_image = default_image
        self.ca = ca
        self.page_size = page_size
        self.enforce_timeouts = enforce_timeouts
        self.keep_images = keep_images
        self.signer = ids.TokenSigner()
        self.router_url = ""  # set by the server once it listens
        self.docker = docker.from_env(timeout=120)
        self.endpoint = DockerEndpoint(self.docker.api._version)
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"fake-modal-{server_id}")
        self._tls_ctx = ca.server_context()
        self.apps: dict[str, App] = {}
        self.environments: dict[str, str] = {}
        self.images: dict[str, ImageRecord] = {}
        self._image_builds: dict[str, asyncio.Future[ImageRecord]] = {}
        self.volumes: dict[str, VolumeRecord] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 hex -> content of uploaded files
        self.mounts: dict[str, tuple[dict[str, tuple[str, int]], str]] = {}  # id -> ({path: (sha, mode)}, checksum)
        self.named_mounts: dict[tuple[str, str], str] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self._by_task: dict[str, Sandbox] = {}
        self._by_docker_exec: dict[str, Exec] = {}
        self._last_created = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: docker_ops.EventWatcher | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not await self.blocking(docker_ops.image_exists, self.docker, self.default_image):
            raise RuntimeError(
                f"fake Modal: local image {self.default_image!r} not found (build it, e.g. `make base-image`)"
            )
        self._watcher = await self.blocking(docker_ops.EventWatcher, self.docker, self.server_id, self._event_from_thread)
        self._watchdog = self._loop.create_task(self._watch_timeouts())

    async def shutdown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sb in list(self.sandboxes.values()):
            for t in sb.tunnels.values():
                await t.forwarder.close()
            for p in [sb.main, *(e.process for e in sb.execs.values())]:
                if p is not None:
                    p.set_exit(137)
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(p.close(), timeout=2)
        for t in list(self._tasks):
            t.cancel()
        if self._watcher is not None:
            await self.blocking(self._watcher.close)
        await self.blocking(docker_ops.cleanup, self.docker, self.server_id, self.keep_images)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.docker.close()

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- apps, environments, images, volumes ------------------------------------------

    def environment(self, name: str) -> tuple[str, str]:
        name = name or DEFAULT_ENVIRONMENT
        if name not in self.environments:
            self.environments[name] = ids.random_id("en")
        return name, self.environments[name]

    def app_get_or_create(self, name: str, environment: str, create: bool) -> App:
        env, _ = self.environment(environment)
        if name in self.apps:  # lookup by app id
            return self.apps[name]
        for app in self.apps.values():
            if app.name == name and app.environment == env:
                return app
        if not create:
            raise GRPCError(Status.NOT_FOUND, f"App '{name}' not found in environment '{env}'")
        app = App(id=ids.random_id("ap"), name=name, environment=env, created_at=time.time())
        self.apps[app.id] = app
        return app

    def app(self, app_id: str) -> App:
        if app_id not in self.apps:
            raise GRPCError(Status.NOT_FOUND, f"App {app_id} not found")
        return self.apps[app_id]

    async def image_get_or_create(self, image: api_pb2.Image) -> tuple[str, api_pb2.GenericResult]:
        """Resolve an image definition to a local Docker image.

        A layer `FROM <registry name>` (from_registry, debian_slim, …) is the server's local
        image as is: its setup commands need the network and are skipped. A layer on top of
        another image (`FROM base`) with more commands is built for real with `docker build`.
        """
        iid = ids.content_id("im", image.SerializeToString(deterministic=True))
        if iid in self.images:
            return iid, GS(status=GS.GENERIC_STATUS_SUCCESS)
        if iid in self._image_builds:
            fut = self._image_builds[iid]
        else:
            fut = asyncio.get_running_loop().create_future()
            self._image_builds[iid] = fut
            try:
                fut.set_result(await self._resolve_image(iid, image))
                self.images[iid] = fut.result()
            except Exception as e:  # noqa: BLE001 - every failure is a failed build
                fut.set_exception(e)
            finally:
                del self._image_builds[iid]
        try:
            await asyncio.shield(fut)
        except GRPCError:
            raise
        except Exception as e:  # noqa: BLE001
            return iid, GS(status=GS.GENERIC_STATUS_FAILURE, exception=f"fake Modal image build failed: {e}")
        return iid, GS(status=GS.GENERIC_STATUS_SUCCESS)

    async def _resolve_image(self, iid: str, image: api_pb2.Image) -> ImageRecord:
        if image.build_function.definition or image.build_function_def:
            raise RuntimeError("build functions are not supported by the fake")
        commands = [c for c in image.dockerfile_commands if c.strip()]
        if not commands or not commands[0].upper().startswith("FROM "):
            raise RuntimeError(f"image definition does not start with FROM: {commands[:1]}")
        source = _from_ref(commands[0])
        bases = {b.docker_tag: b.image_id for b in image.base_images}
        rest = commands[1:]
        if source in bases:
            base = self.images.get(bases[source])
            if base is None:
                raise GRPCError(Status.NOT_FOUND, f"Image {bases[source]} not found")
            base_ref, description = base.docker_ref, base.source
        else:
            base_ref, description = self.default_image, source
            if SDK_BASE_IMAGE.match(source):
                # debian_slim's own recipe (apt-get, pip from the network): the local image stands in.
                rest = []
        if not rest:
            return ImageRecord(iid, base_ref, source=description, owned=False)
        context = {f.filename: (f.data, 0o644) for f in image.context_files}
        if image.context_mount_id:
            context.update({name.lstrip("/"): f for name, f in self.mount_files([image.context_mount_id]).items()})
        ref = await self.blocking(
            docker_ops.build,
            self.docker,
            server_id=self.server_id,
            image_id=iid,
            base_ref=base_ref,
            commands=_local_froms(rest, self.default_image),
            context_files=context,
        )
        return ImageRecord(iid, ref, source=f"{description} + {len(rest)} Dockerfile commands", owned=True)

    # ---- mounts (local files the SDK uploads) -------------------------------------------

    def missing_blobs(self, hashes: list[str]) -> list[str]:
        return [h for h in hashes if h not in self.blobs]

    def put_blob(self, sha256_hex: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != sha256_hex:
            raise GRPCError(Status.INVALID_ARGUMENT, f"content does not match sha256 {sha256_hex}")
        self.blobs[sha256_hex] = data

    def mount_get_or_create(
        self, files: list[api_pb2.MountFile], name: str, environment: str, creation: int
    ) -> tuple[str, str]:
        """Returns (mount id, content checksum)."""
        env, _ = self.environment(environment)
        if name and not files and creation == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
            mount_id = self.named_mounts.get((env, name))
            if mount_id is None:
                raise GRPCError(Status.NOT_FOUND, f"Mount '{name}' not found")
            return mount_id, self.mounts[mount_id][1]
        missing = [f.filename for f in files if f.sha256_hex not in self.blobs]
        if missing:
            raise GRPCError(Status.FAILED_PRECONDITION, f"mount files were not uploaded: {missing[:5]}")
        entries = {f.filename: (f.sha256_hex, f.mode or 0o644) for f in files}
        checksum = hashlib.sha256(repr(sorted(entries.items())).encode()).hexdigest()
        mount_id = ids.content_id("mo", checksum.encode())
        self.mounts[mount_id] = (entries, checksum)
        if name:
            if creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS and (env, name) in self.named_mounts:
                raise GRPCError(Status.ALREADY_EXISTS, f"Mount '{name}' already exists")
            self.named_mounts[(env, name)] = mount_id
        return mount_id, checksum

    def mount_files(self, mount_ids: list[str]) -> dict[str, tuple[bytes, int]]:
        """remote path -> (content, mode) for the given mounts, later mounts winning."""
        out: dict[str, tuple[bytes, int]] = {}
        for mount_id in mount_ids:
            if mount_id not in self.mounts:
                raise GRPCError(Status.NOT_FOUND, f"Mount {mount_id} not found")
            for filename, (sha, mode) in self.mounts[mount_id][0].items():
                out[filename] = (self.blobs[sha], mode)
        return out

    async def image(self, image_id: str) -> ImageRecord:
        if image_id not in self.images:
            ref = await self.blocking(docker_ops.find_image_by_id, self.docker, image_id)
            if ref is None:
                raise GRPCError(Status.NOT_FOUND, f"Image {image_id} not found")
            self.images[image_id] = ImageRecord(image_id, ref, source="kept image", owned=True)
        return self.images[image_id]

    def volume_get_or_create(self, name: str, environment: str, creation: int) -> VolumeRecord:
        env, _ = self.environment(environment)
        if creation == api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL or not name:
            vol = VolumeRecord(ids.random_id("vo"), name="", environment=env)
            self.volumes[vol.id] = vol
            return vol
        for vol in self.volumes.values():
            if vol.name == name and vol.environment == env:
                if creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                    raise GRPCError(Status.ALREADY_EXISTS, f"Volume '{name}' already exists")
                return vol
        if creation not in (
            api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
            api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS,
        ):
            raise GRPCError(Status.NOT_FOUND, f"Volume '{name}' not found in environment '{env}'")
        vol = VolumeRecord(ids.random_id("vo"), name=name, environment=env)
        self.volumes[vol.id] = vol
        return vol

    # ---- sandboxes ---------------------------------------------------------------------

    def sandbox(self, sandbox_id: str) -> Sandbox:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            raise GRPCError(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return sb

    def sandbox_by_task(self, task_id: str) -> Sandbox:
        sb = self._by_task.get(task_id)
        if sb is None:
            raise GRPCError(Status.NOT_FOUND, f"Task {task_id} not found")
        return sb

    def running_by_task(self, task_id: str) -> Sandbox:
        sb = self.sandbox_by_task(task_id)
        if not sb.running:
            raise GRPCError(Status.NOT_FOUND, f"Task {task_id} has finished")
        return sb

    def _name_taken(self, app_id: str, name: str) -> bool:
        return any(
            s.app_id == app_id and s.name == name and s.state in ("creating", "running")
            for s in self.sandboxes.values()
        )

    async def create_sandbox(
        self, app_id: str, definition: api_pb2.Sandbox, tags: dict[str, str], env: dict[str, str]
    ) -> Sandbox:
        app = self.app(app_id)
        if definition.timeout_secs > MAX_TIMEOUT_SECS:
            raise GRPCError(Status.INVALID_ARGUMENT, f"timeout must be at most {MAX_TIMEOUT_SECS} seconds")
        image = await self.image(definition.image_id) if definition.image_id else await self.image_default()
        name = definition.name if definition.HasField("name") and definition.name else None
        if name is not None and self._name_taken(app_id, name):
            raise GRPCError(
                Status.ALREADY_EXISTS, f"Sandbox with name '{name}' already exists in app '{app.name}'"
            )
        now = max(time.time(), self._last_created + 1e-6)
        self._last_created = now
        sb = Sandbox(
            id=ids.sandbox_id(),
            task_id=ids.task_id(),
            app_id=app_id,
            environment=app.environment,
            name=name,
            tags=dict(tags),
            image_id=image.id,
            definition=definition,
            created_at=now,
            timeout_secs=definition.timeout_secs,
            idle_timeout_secs=definition.idle_timeout_secs if definition.HasField("idle_timeout_secs") else None,
        )
        self.sandboxes[sb.id] = sb
        try:
            await self._start_container(sb, image, env)
        except BaseException as e:
            self.sandboxes.pop(sb.id, None)
            self._by_task.pop(sb.task_id, None)
            if sb.container_id:
                await asyncio.shield(self.blocking(docker_ops.remove_container, self.docker, sb.container_id))
            for t in sb.tunnels.values():
                await t.forwarder.close()
            if isinstance(e, GRPCError) or not isinstance(e, Exception):
                raise
            log.exception("sandbox create failed")
            raise GRPCError(Status.INTERNAL, f"fake Modal could not start the sandbox container: {e}") from e
        sb.state = "running"
        sb.started_mono = time.monotonic()
        sb.touch()
        self._by_task[sb.task_id] = sb
        if sb.pending_exit is not None:
            await self._finish(sb, sb.pending_exit)
        return sb

    async def image_default(self) -> ImageRecord:
        iid = ids.content_id("im", self.default_image.encode())
        self.images.setdefault(iid, ImageRecord(iid, self.default_image, source=self.default_image, owned=False))
        return self.images[iid]

    async def _start_container(self, sb: Sandbox, image: ImageRecord, env: dict[str, str]) -> None:
        d = sb.definition
        ports: dict[int, bool] = {}  # container port -> unencrypted
        if d.HasField("open_ports"):
            for spec in d.open_ports.ports:
                ports[spec.port] = ports.get(spec.port, False) or spec.unencrypted
        volumes: dict[str, tuple[str, bool]] = {}
        for vm in d.volume_mounts:
            vol = self.volumes.get(vm.volume_id)
            if vol is None:
                raise GRPCError(Status.NOT_FOUND, f"Volume {vm.volume_id} not found")
            if vol.docker_volume is None:
                vol.docker_volume = await self.blocking(docker_ops.ensure_volume, self.docker, self.server_id, vol.id)
            volumes[vol.docker_volume] = (vm.mount_path, vm.read_only)
        container_env = {**dict(d.environment_variables.contents), **env}
        block = d.network_access.network_access_type == api_pb2.NetworkAccess.BLOCKED or d.block_network
        container = await self.blocking(
            docker_ops.create_container,
            self.docker,
            server_id=self.server_id,
            sandbox_id=sb.id,
            image_ref=image.docker_ref,
            args=list(d.entrypoint_args),
            workdir=d.workdir if d.HasField("workdir") else None,
            env=container_env,
            ports=sorted(ports),
            volumes=volumes,
            block_network=block,
        )
        sb.container_id = container.id
        mount_ids = list(d.mount_ids)
        if mount_ids:
            archive = docker_ops.tar_files(self.mount_files(mount_ids))
            await self.blocking(container.put_archive, "/", archive)
        main = Process(None, tty=False)
        reader, writer = await self.endpoint.hijack(
            f"/containers/{container.id}/attach?stream=1&stdin=1&stdout=1&stderr=1"
        )
        main.attach(reader, writer)
        sb.main = main
        await self.blocking(container.start)
        published = await self.blocking(docker_ops.published_ports, container) if ports else {}
        for port, unencrypted in sorted(ports.items()):
            if port not in published:
                continue
            fwd = TlsForwarder(self._tls_ctx, published[port], on_open=partial(self._conn, sb, 1),
                               on_close=partial(self._conn, sb, -1))
            await fwd.start()
            sb.tunnels[port] = Tunnel(port, published[port], fwd.port, unencrypted, fwd)
        self._spawn(self._main_exit_fallback(sb, main))

    def _conn(self, sb: Sandbox, delta: int) -> None:
        sb.open_connections += delta
        sb.touch()

    def list_sandboxes(
        self, app_id: str, environment: str, tags: dict[str, str], before: float, include_finished: bool
    ) -> list[Sandbox]:
        env = environment or DEFAULT_ENVIRONMENT
        out = []
        for sb in self.sandboxes.values():
            if sb.state == "creating" or (not include_finished and not sb.running):
                continue
            if app_id and sb.app_id != app_id:
                continue
            if not app_id and sb.environment != env:
                continue
            if any(sb.tags.get(k) != v for k, v in tags.items()):
                continue
            if before and not sb.created_at < before:
                continue
            out.append(sb)
        out.sort(key=lambda s: s.created_at, reverse=True)
        return out[: self.page_size]

    def sandbox_by_name(self, app_name: str, environment: str, name: str, include_terminated: bool) -> Sandbox:
        env = environment or DEFAULT_ENVIRONMENT
        app = next((a for a in self.apps.values() if a.name == app_name and a.environment == env), None)
        if app is not None:
            candidates = [s for s in self.sandboxes.values() if s.app_id == app.id and s.name == name]
            running = [s for s in candidates if s.running]
            if running:
                return running[0]
            finished = sorted((s for s in candidates if s.state == "finished"), key=lambda s: s.created_at)
            if include_terminated and finished:
                return finished[-1]
        raise GRPCError(Status.NOT_FOUND, f"Sandbox with name '{name}' not found in app '{app_name}'")

    async def wait(self, sb: Sandbox, timeout: float) -> None:
        if sb.result is None and timeout > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(sb.done.wait(), timeout=min(timeout, 55.0))

    async def terminate(self, sb: Sandbox, status: int = GS.GENERIC_STATUS_TERMINATED, why: str = "") -> None:
        if sb.result is not None:
            return
        sb.result = GS(status=status, exception=why)
        await self._teardown(sb)

    async def _finish(self, sb: Sandbox, exit_code: int) -> None:
        """The sandbox's main process exited on its own."""
        if sb.result is not None:
            return
        if sb.state == "creating":
            sb.pending_exit = exit_code
            return
        status = GS.GENERIC_STATUS_SUCCESS if exit_code == 0 else GS.GENERIC_STATUS_FAILURE
        sb.result = GS(status=status, exitcode=exit_code)
        await self._teardown(sb)

    async def _teardown(self, sb: Sandbox) -> None:
        sb.state = "finished"
        sb.finished_at = time.time()
        for t in sb.tunnels.values():
            await t.forwarder.close()
        if sb.container_id:
            await self.blocking(docker_ops.remove_container, self.docker, sb.container_id)
        for ex in sb.execs.values():
            ex.process.set_exit(137)
            await ex.process.close()
        if sb.main is not None:
            sb.main.set_exit(sb.result.exitcode if sb.result and sb.result.exitcode else 137)
            await sb.main.close()
        sb.done.set()

    async def snapshot(self, sb: Sandbox, snapshot_id: str) -> str:
        if snapshot_id and snapshot_id in sb.snapshots:
            return sb.snapshots[snapshot_id]
        assert sb.container_id
        iid = ids.random_id("im")
        ref = await self.blocking(docker_ops.commit, self.docker, sb.container_id, self.server_id, iid)
        self.images[iid] = ImageRecord(iid, ref, source=f"snapshot of {sb.id}", owned=True)
        if snapshot_id:
            sb.snapshots[snapshot_id] = iid
        return iid

    # ---- exec --------------------------------------------------------------------------

    async def exec_start(
        self,
        sb: Sandbox,
        exec_id: str,
        args: list[str],
        env: dict[str, str],
        workdir: str | None,
        pty: api_pb2.PTYInfo | None,
        discard_stdout: bool,
        discard_stderr: bool,
    ) -> Exec:
        if exec_id in sb.execs:  # a retried start
            return sb.execs[exec_id]
        if not args:
            raise GRPCError(Status.INVALID_ARGUMENT, "exec needs a command")
        tty = pty is not None and pty.enabled
        if tty and pty is not None:
            env = {"TERM": pty.env_term or "xterm-256color", **env}
            if pty.env_colorterm:
                env.setdefault("COLORTERM", pty.env_colorterm)
        assert sb.container_id
        created = await self.blocking(
            self.docker.api.exec_create,
            sb.container_id,
            args,
            stdin=True,
            stdout=True,
            stderr=True,
            tty=tty,
            environment=env or None,
            workdir=workdir or None,
        )
        process = Process(created["Id"], tty=tty, discard_stdout=discard_stdout, discard_stderr=discard_stderr)
        ex = Exec(exec_id, process, list(args), time.time())
        sb.execs[exec_id] = ex
        self._by_docker_exec[created["Id"]] = ex
        try:
            reader, writer = await self.endpoint.hijack(f"/exec/{created['Id']}/start", {"Detach": False, "Tty": tty})
        except RuntimeError as e:
            process.set_exit(126)
            process.stdout.close()
            process.stderr.close()
            raise GRPCError(Status.INVALID_ARGUMENT, f"exec failed: {e}") from e
        process.attach(reader, writer)
        if tty and pty is not None and pty.winsz_rows and pty.winsz_cols:
            with contextlib.suppress(Exception):
                await self.blocking(self.docker.api.exec_resize, created["Id"], pty.winsz_rows, pty.winsz_cols)
        sb.touch()
        self._spawn(self._exec_exit_fallback(sb, process))
        return ex

    def exec(self, task_id: str, exec_id: str) -> Exec:
        sb = self.sandbox_by_task(task_id)
        ex = sb.execs.get(exec_id)
        if ex is None:
            raise GRPCError(Status.NOT_FOUND, f"exec {exec_id} not found in task {task_id}")
        return ex

    async def _exec_exit_fallback(self, sb: Sandbox, process: Process) -> None:
        """Docker's `exec_die` event normally delivers the exit code; if it is missed,
        inspect once the output has ended (and then every second)."""
        await process.output_done.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(process.exited.wait(), timeout=0.2)
        while process.exit_code is None and sb.running:
            try:
                info = await self.blocking(self.docker.api.exec_inspect, process.docker_exec_id)
            except docker.errors.APIError:
                process.set_exit(137)
                break
            if not info.get("Running"):
                # A command that could not start has no exec_die event and a null code.
                code = info.get("ExitCode")
                process.set_exit(126 if code is None else int(code))
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.exited.wait(), timeout=0.5)
        sb.touch()

    async def _main_exit_fallback(self, sb: Sandbox, process: Process) -> None:
        await process.output_done.wait()
        await asyncio.sleep(3)
        if sb.running and sb.container_id:
            try:
                info = await self.blocking(self.docker.api.inspect_container, sb.container_id)
            except docker.errors.NotFound:
                await self.terminate(sb, GS.GENERIC_STATUS_TERMINATED, "container vanished")
                return
            state = info.get("State", {})
            if not state.get("Running"):
                await self._finish(sb, int(state.get("ExitCode") or 0))

    # ---- docker events and timeouts -----------------------------------------------------

    def _event_from_thread(self, event: dict) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: dict) -> None:
        action = event.get("Action") or event.get("status") or ""
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        if action == "exec_die":
            ex = self._by_docker_exec.get(attrs.get("execID", ""))
            if ex is not None:
                ex.process.set_exit(int(attrs.get("exitCode") or 0))
        elif action == "die":
            sb = self.sandboxes.get(attrs.get(docker_ops.SANDBOX_LABEL, ""))
            if sb is not None and sb.result is None:
                self._spawn(self._finish(sb, int(attrs.get("exitCode") or 0)))

    async def _watch_timeouts(self) -> None:
        while True:
            await asyncio.sleep(1)
            if not self.enforce_timeouts:
                continue
            now = time.monotonic()
            for sb in list(self.sandboxes.values()):
                if not sb.running:
                    continue
                if sb.timeout_secs and now - sb.started_mono >= sb.timeout_secs:
                    self._spawn(self.terminate(sb, GS.GENERIC_STATUS_TIMEOUT, "Sandbox timed out"))
                elif (
                    sb.idle_timeout_secs
                    and sb.active_execs() == 0
                    and sb.open_connections == 0
                    and now - sb.last_active >= sb.idle_timeout_secs
                ):
                    self._spawn(self.terminate(sb, GS.GENERIC_STATUS_IDLE_TIMEOUT, "Sandbox idle timeout"))
