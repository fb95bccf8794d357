"""`fleet pull AGENT [DEST]`: copy an agent's working directory to this machine.

An agent on a Modal host works in the sandbox's /workspace, which exists only
there (and in the snapshot taken when the sandbox goes); a Docker agent's
/workspace may be a volume or a copy. Both come back the same way: a tar stream
of /workspace (Docker's archive API, or `tar -c` run in the sandbox), extracted
with the standard library's `data` filter, so nothing in the archive can write
outside DEST, create devices or keep setuid bits.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from reconciler.core.errors import FleetError
from reconciler.core.model import ObservedAgent
from reconciler.providers.base import archive_of, get_provider

WORKDIR = "/workspace"


@dataclass(frozen=True)
class Pulled:
    dest: Path
    files: int
    bytes: int
    kept: tuple[str, ...] = ()  # members not extracted: they would have replaced the fleet file


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _archive(fleet: str, agent: ObservedAgent) -> tuple[Iterable[bytes], str]:
    """A tar stream of the agent's /workspace and the prefix its members carry."""
    archive = archive_of(get_provider(agent.key))
    if archive is None:
        raise FleetError(f"agent {agent.name}: pulling files is not available on provider {agent.provider}")
    return archive.archive(fleet, agent, WORKDIR)


def pull(fleet: str, agent: ObservedAgent, dest: Path, protect: tuple[Path, ...] = ()) -> Pulled:
    """Extract the agent's /workspace into `dest` (created if missing; files
    already there with the same names are overwritten), except the `protect`ed
    files (the fleet file): an agent's copy of fleet.yaml must not replace the
    user's, whatever the member's name or the links before it lead to."""
    guarded = {os.path.realpath(p) for p in protect}
    if dest.exists() and not dest.is_dir():
        raise FleetError(f"{dest} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    chunks, prefix = _archive(fleet, agent)
    files = size = 0
    kept: list[str] = []
    try:
        with tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), 1 << 16), mode="r|") as tar:
            for member in tar:
                name = member.name
                if name == prefix or name in (".", "./"):
                    continue
                if name.startswith(prefix + "/"):
                    name = name[len(prefix) + 1:]
                member.name = name
                if member.islnk() and member.linkname.startswith(prefix + "/"):
                    member.linkname = member.linkname[len(prefix) + 1:]
                if guarded and os.path.realpath(dest / name) in guarded:
                    kept.append(name)
                    continue
                try:
                    tar.extract(member, dest, filter="data")
                except tarfile.FilterError as exc:
                    raise FleetError(f"refused {member.name!r} from agent {agent.name}: {exc}") from None
                if member.isreg():
                    files += 1
                    size += member.size
    except tarfile.ReadError as exc:
        raise FleetError(f"agent {agent.name}: the archive of {WORKDIR} could not be read ({exc})") from None
    return Pulled(dest, files, size, tuple(kept))
