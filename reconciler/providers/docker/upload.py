"""A workspace directory of this machine copied into a named volume of a Docker
engine (a remote one: `engine:`), where no bind mount of this machine's files
can reach.

One thing, in order: create a short-lived helper container from the owner's
image whose volume mount at /workspace creates the volume (labelled as the
fleet's workspace volume, named as the local one, `labels.workspace_volume`)
in the same call; put a tar of the directory into it (never started: Docker
copies into the volumes of a created container); remove the helper. The helper
is the mark of an upload not finished: while it exists, its volume does not
count as uploaded (`partial`), so a run killed or cut off midway is followed by
a fresh upload on the next apply (the partial volume and the helper removed
first). What fails on the way is undone at once.

The tar holds what Modal's upload holds: regular files, directories, symlinks
(as links, never what they point to) and hard links, owned by root; sockets,
devices and FIFOs are left out.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError

UPLOAD = L.PREFIX + "upload"  # on the helper container: "<fleet>/<owner>" (no project label: observation never sees it)
WORKDIR = "/workspace"


def helper_name(fleet: str, owner: str) -> str:
    """The helper container's name: 4 parts with "upload" where a holder has "host"."""
    return f"fleet_{fleet}_upload_{owner}"


def volume_labels(fleet: str, owner: str, engine: str | None) -> dict[str, str]:
    return {L.PROJECT: fleet, L.HOST: owner, L.KIND: "workspace", **({L.ENGINE: engine} if engine is not None else {})}


def _entry(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def pack(source: Path, into: Any) -> tuple[int, int]:
    """Write a tar of `source`'s contents (members relative to it) into the file
    `into`; (files, bytes of file data)."""
    files = size = 0
    with tarfile.open(fileobj=into, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(source.iterdir()):
            tar.add(str(entry), arcname=entry.name, filter=_entry)
        for m in tar.getmembers():
            if m.isreg():
                files += 1
                size += m.size
    return files, size


def _remove_helper(api: Any, name: str, mark: str) -> None:
    """Remove a helper container of ours (by its label), gone already: fine."""
    from docker.errors import APIError, NotFound

    try:
        info = api.inspect_container(name)
    except NotFound:
        return
    if (info.get("Config", {}).get("Labels") or {}).get(UPLOAD) != mark:
        raise ProviderError(f"container {name}", "exists and is not a workspace upload helper of fleet's; not touching it")
    try:
        api.remove_container(info["Id"], force=True, v=False)
    except NotFound:
        return
    except APIError as exc:
        raise ProviderError(f"container {name}", (exc.explanation or str(exc)).strip()) from None


def forget_helper(api: Any, fleet: str, owner: str) -> None:
    """Remove the helper a cut-off upload of `owner`'s workspace left (none: fine)."""
    _remove_helper(api, helper_name(fleet, owner), f"{fleet}/{owner}")


def partial(api: Any, fleet: str) -> tuple[str, ...]:
    """The workspace volumes of `fleet` whose upload did not finish (a helper is
    left): one list call."""
    rows = api.containers(all=True, filters={"label": UPLOAD})
    owners = []
    for c in rows:
        mark = (c.get("Labels") or {}).get(UPLOAD) or ""
        f, _, owner = mark.partition("/")
        if f == fleet and owner and ((c.get("Names") or [""])[0] or "").lstrip("/") == helper_name(fleet, owner):
            owners.append(owner)
    return tuple(sorted(L.workspace_volume(fleet, o) for o in owners))


def _helper_left(api: Any, name: str, mark: str) -> bool:
    from docker.errors import NotFound

    try:
        info = api.inspect_container(name)
    except NotFound:
        return False
    return (info.get("Config", {}).get("Labels") or {}).get(UPLOAD) == mark


def upload(api: Any, fleet: str, owner: str, source: Path, image: str, engine: str | None, resource: str) -> str:
    """Create the workspace volume of `owner` and copy `source` into it; a note.
    A complete volume already there (made meanwhile) is kept as it is; a partial
    one (its helper left by a run that was cut off) is made again."""
    from docker.errors import APIError, DockerException, NotFound
    from docker.types import Mount

    where = f" on {engine}" if engine is not None else ""
    volume = L.workspace_volume(fleet, owner)
    want = volume_labels(fleet, owner, engine)
    if not source.is_dir():
        raise ProviderError(resource, f"workspace {source} is not a directory")
    mark = f"{fleet}/{owner}"
    helper = helper_name(fleet, owner)
    left = _helper_left(api, helper, mark)
    try:
        found = api.inspect_volume(volume)
    except NotFound:
        found = None
    redo = ""
    if found is not None:
        lab = found.get("Labels") or {}
        if any(lab.get(k) != v for k, v in want.items()):
            raise ProviderError(resource, f"volume {volume}{where} exists but is not this workspace's "
                                          "(labels differ); fleet does not fill a volume it did not create")
        if not left:
            return f"volume {volume}{where} exists already: kept as it is (not uploaded again)"
        redo = " (again: the previous upload was cut off)"
    _remove_helper(api, helper, mark)  # left by a run that was cut off
    if found is not None:
        api.remove_volume(volume, force=True)  # partial: only the cut-off upload ever wrote to it
    made = False
    try:
        with tempfile.TemporaryFile() as buf:
            files, size = pack(source, buf)
            buf.seek(0)
            # the helper's mount creates the labelled volume in the same call: no volume without its helper
            c = api.create_container(
                image=image, command=["true"], name=helper, labels={UPLOAD: mark}, network_disabled=True,
                host_config=api.create_host_config(
                    mounts=[Mount(WORKDIR, volume, type="volume", labels=want)], network_mode="none"),
            )
            made = True
            if not api.put_archive(c["Id"], WORKDIR, buf):
                raise ProviderError(resource, f"the engine{where} refused the archive of {source}")
            _remove_helper(api, helper, mark)  # the upload is complete from here on
    except (APIError, DockerException, OSError, ProviderError) as exc:
        if made:
            try:
                _remove_helper(api, helper, mark)
                api.remove_volume(volume, force=True)
            except Exception:
                pass  # the helper, if left, marks the volume partial: the next apply uploads again
        if isinstance(exc, ProviderError):
            raise
        text = str(getattr(exc, "explanation", None) or exc).strip()
        raise ProviderError(resource, f"upload of workspace {source} to volume {volume}{where} failed: "
                                      f"{text.splitlines()[0][:200] if text else type(exc).__name__}") from None
    return f"uploaded {source} ({files} files, {size} bytes) to volume {volume}{where}{redo}"
