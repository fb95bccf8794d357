"""The blocking Docker calls behind the fake's sandboxes, images and volumes.

Everything the fake creates carries `dev.fleet.test=1` (so stray test resources can be
swept) and `dev.fleet.fake-modal=<server id>` (so one server cleans up exactly its own).
These functions run in worker threads; the event loop never blocks on Docker.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Callable
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

TEST_LABEL = "dev.fleet.test"
SERVER_LABEL = "dev.fleet.fake-modal"
SANDBOX_LABEL = "dev.fleet.fake-modal.sandbox"
IMAGE_ID_LABEL = "dev.fleet.fake-modal.image-id"
VOLUME_ID_LABEL = "dev.fleet.fake-modal.volume-id"

ANSI = re.compile(r"\x1b\[[0-9;]*m")
BUILD_DOCKERFILE = ".fake-modal.Dockerfile"  # ours, beside the user's context files

# The sandbox's main process when `Sandbox.create` gets no command: wait forever.
HOLDER = ["/bin/sh", "-c", "while :; do sleep 3600; done"]


def labels(server_id: str, **extra: str) -> dict[str, str]:
    return {TEST_LABEL: "1", SERVER_LABEL: server_id, **extra}


def docker_name(object_id: str) -> str:
    """A Docker-safe (lower-case) name for a case-sensitive Modal id, still unique."""
    return f"{object_id.lower()}-{hashlib.sha256(object_id.encode()).hexdigest()[:8]}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def create_container(
    client: docker.DockerClient,
    *,
    server_id: str,
    sandbox_id: str,
    image_ref: str,
    args: list[str],
    workdir: str | None,
    env: dict[str, str],
    ports: list[int],
    volumes: dict[str, tuple[str, bool]],
    block_network: bool,
) -> Container:
    """Create (not start) the container backing a sandbox."""
    kwargs: dict[str, Any] = dict(
        image=image_ref,
        name=f"fake-modal-{server_id.lower()}-{docker_name(sandbox_id)}",
        labels=labels(server_id, **{SANDBOX_LABEL: sandbox_id}),
        init=True,
        stdin_open=True,
        detach=True,
        environment=env,
        volumes={vol: {"bind": path, "mode": "ro" if ro else "rw"} for vol, (path, ro) in volumes.items()},
    )
    if args:
        kwargs["command"] = args
    else:
        kwargs["entrypoint"] = HOLDER
        kwargs["command"] = []
    if workdir:
        kwargs["working_dir"] = workdir
    if block_network:
        kwargs["network_mode"] = "none"
    elif ports:
        kwargs["ports"] = {f"{p}/tcp": ("127.0.0.1", None) for p in ports}
    return client.containers.create(**kwargs)


def tar_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of absolute paths, made relative to / (Docker creates missing parents)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(files):
            data, mode = files[path]
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = mode & 0o7777 or 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def published_ports(container: Container) -> dict[int, int]:
    """container port -> host port on 127.0.0.1, read after start."""
    container.reload()
    out: dict[int, int] = {}
    for key, bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).items():
        port, _, proto = key.partition("/")
        if proto == "tcp" and bindings:
            for b in bindings:
                if b.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                    out[int(port)] = int(b["HostPort"])
                    break
    return out


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True, v=False)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        if "already in progress" not in str(e):
            raise


def commit(client: docker.DockerClient, container_id: str, server_id: str, image_id: str) -> str:
    """`docker commit` the container's filesystem; returns the new image's reference."""
    repo = f"fake-modal-{server_id.lower()}"
    tag = docker_name(image_id)
    client.api.commit(
        container_id,
        repository=repo,
        tag=tag,
        conf={"Labels": labels(server_id, **{IMAGE_ID_LABEL: image_id})},
    )
    return f"{repo}:{tag}"


def build(
    client: docker.DockerClient,
    *,
    server_id: str,
    image_id: str,
    base_ref: str,
    commands: list[str],
    context_files: dict[str, tuple[bytes, int]],
) -> str:
    """A real `docker build` of Dockerfile `commands` on top of `base_ref` (no pulls).

    Raises RuntimeError with the tail of the build log on failure.
    """
    dockerfile = "\n".join([f"FROM {base_ref}", *commands]) + "\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, (data, mode) in {**context_files, BUILD_DOCKERFILE: (dockerfile.encode(), 0o644)}.items():
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(data)
            info.mode = mode & 0o7777 or 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    repo = f"fake-modal-{server_id.lower()}"
    ref = f"{repo}:{docker_name(image_id)}"
    log: list[str] = []
    try:
        for chunk in client.api.build(
            fileobj=buf,
            custom_context=True,
            dockerfile=BUILD_DOCKERFILE,
            tag=ref,
            rm=True,
            forcerm=True,
            pull=False,
            labels=labels(server_id, **{IMAGE_ID_LABEL: image_id}),
            decode=True,
        ):
            if "stream" in chunk:
                log.append(ANSI.sub("", chunk["stream"]))
            if "error" in chunk:
                log.append(ANSI.sub("", chunk["error"]))
                raise RuntimeError("".join(log)[-4000:])
    except docker.errors.APIError as e:
        raise RuntimeError(f"{''.join(log)[-3000:]}\n{e}") from e
    return ref


def ensure_volume(client: docker.DockerClient, server_id: str, volume_id: str) -> str:
    name = f"fake-modal-{server_id.lower()}-{docker_name(volume_id)}"
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(name=name, labels=labels(server_id, **{VOLUME_ID_LABEL: volume_id}))
    return name


def find_image_by_id(client: docker.DockerClient, image_id: str) -> str | None:
    """A snapshot or build image left by an earlier run (kept with --keep-images)."""
    found = client.images.list(filters={"label": f"{IMAGE_ID_LABEL}={image_id}"})
    if not found:
        return None
    tags = found[0].tags
    return tags[0] if tags else found[0].id


def cleanup(client: docker.DockerClient, server_id: str | None, keep_images: bool = False) -> dict[str, int]:
    """Remove the containers, volumes and (unless kept) images of one server, or of every
    fake Modal server when `server_id` is None. Returns counts."""
    selector = f"{SERVER_LABEL}={server_id}" if server_id else SERVER_LABEL
    counts = {"containers": 0, "images": 0, "volumes": 0}
    for c in client.containers.list(all=True, filters={"label": selector}):
        remove_container(client, c.id)
        counts["containers"] += 1
    if not keep_images:
        # Layers built on layers: remove children first, and retry what a child still held.
        for _ in range(5):
            images = client.images.list(filters={"label": selector})
            if not images:
                break
            for img in sorted(images, key=lambda i: i.attrs.get("Created", ""), reverse=True):
                try:
                    client.images.remove(img.id, force=True)
                    counts["images"] += 1
                except docker.errors.APIError:
                    pass
    for vol in client.volumes.list(filters={"label": selector}):
        try:
            vol.remove(force=True)
            counts["volumes"] += 1
        except docker.errors.APIError:
            pass
    return counts


class EventWatcher:
    """Follows Docker events for one server's containers in a thread.

    Calls `sink(event)` for each event (from the watcher thread); the caller hops
    to its event loop. `close()` ends the stream.
    """

    def __init__(self, client: docker.DockerClient, server_id: str, sink: Callable[[dict], None]) -> None:
        self._stream = client.api.events(
            decode=True, filters={"label": f"{SERVER_LABEL}={server_id}", "type": "container"}
        )
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name=f"fake-modal-events-{server_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in self._stream:
                self._sink(event)
        except Exception:  # the stream is closed under us at shutdown
            pass

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:
            pass
        self._thread.join(timeout=5)
