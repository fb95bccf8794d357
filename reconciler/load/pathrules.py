"""Which directories may be given to an agent, and which files it may not change.

An agent is assumed hostile. A workspace is mounted read-write into its
container, so a workspace that is `/`, a system directory, the user's home, a
folder holding `$FLEET_HOME` (the credential key, both CA keys) or the Docker
socket (root on this machine) hands the agent this machine. Such workspaces are
refused at validation, after resolving symlinks. A build context is sent to the
engine and baked into an image the agent runs, so one that contains
`$FLEET_HOME` is refused too.

The fleet file, when it lies inside a shared workspace, is mounted read-only at
its place (`protected_files`), so an agent cannot edit its own privileges.
Everything here is pure path arithmetic plus `realpath`; nothing is created.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from reconciler.state.home import fleet_home

# A workspace may not be one of these or lie inside one: the system itself.
SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/run", "/sbin", "/sys", "/usr", "/var/lib/docker", "/var/run", "/var/lib/containerd",
)
# A workspace may not be exactly one of these (a project inside them is fine).
SYSTEM_DIRS = ("/", "/home", "/root", "/var", "/opt", "/srv", "/mnt", "/media", "/tmp", "/var/tmp", "/var/lib")
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


class PathLoop(Exception):
    """A path that cannot be resolved: a symlink loop, or too many levels."""


def real(path: Path | str) -> Path:
    """The path with every symlink resolved (missing tails kept as written).
    Raises PathLoop for a symlink loop instead of Python's RuntimeError."""
    try:
        return Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            raise PathLoop(str(path)) from None
        raise
    try:
        return Path(path).resolve()
    except RuntimeError:  # Python 3.11: "Symlink loop from ..."
        raise PathLoop(str(path)) from None


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def docker_sockets() -> list[Path]:
    """The engine's unix sockets this machine may expose."""
    out = [Path(s) for s in DOCKER_SOCKETS]
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        out.append(Path(urlparse(host).path or host[len("unix://"):]))
    resolved = []
    for s in out:
        try:
            resolved.append(real(s))
        except (PathLoop, OSError):
            resolved.append(s)
    return resolved


def home_dir() -> Path | None:
    try:
        return real(Path.home())
    except (RuntimeError, KeyError, PathLoop, OSError):
        return None


def fleet_home_real() -> Path:
    try:
        return real(fleet_home())
    except (PathLoop, OSError):
        return fleet_home().absolute()


def workspace_refusal(p: Path) -> str | None:
    """Why resolved directory `p` may not be mounted into an agent, or None."""
    if p == Path("/"):
        return "/ is the whole machine; give the agent a project folder"
    fh = fleet_home_real()
    if _inside(p, fh):
        return f"{p} is inside $FLEET_HOME ({fh}), which holds fleet's keys and credentials"
    if _inside(fh, p):
        return f"{p} contains $FLEET_HOME ({fh}): an agent could read the credential key and CA keys"
    for sock in docker_sockets():
        if _inside(sock, p):
            return f"{p} contains the Docker socket {sock}: an agent could take over this machine"
    home = home_dir()
    if home is not None and home != Path("/"):
        if p == home:
            return f"{p} is your home directory; give the agent a project folder inside it"
        if _inside(home, p):
            return f"{p} contains your home directory {home}"
    posix = PurePosixPath(p)
    for tree in SYSTEM_TREES:
        if posix == PurePosixPath(tree):
            return f"{p} is a system directory"
        if PurePosixPath(tree) in posix.parents:
            return f"{p} is inside the system directory {tree}"
    if str(posix) in SYSTEM_DIRS:
        return f"{p} is a system directory; give the agent a project folder inside it"
    return None


def context_refusal(p: Path) -> str | None:
    """Why resolved build context `p` may not be sent to the engine, or None."""
    fh = fleet_home_real()
    if _inside(fh, p):
        return f"{p} contains $FLEET_HOME ({fh}): the image would carry the credential key"
    return None


def protected_files(workspace: Path, files: list[Path]) -> tuple[str, ...]:
    """The resolved `files` that lie inside the resolved `workspace`, as sorted
    relative POSIX paths: these are mounted read-only at their place."""
    out = set()
    for f in files:
        if f != workspace and _inside(f, workspace):
            out.add(f.relative_to(workspace).as_posix())
    return tuple(sorted(out))


def linked_file_refusal(workspace: Path, given: Path) -> str | None:
    """A fleet file reached through a symlink that lies inside the workspace
    could be re-pointed by the agent (a mount protects a file, not a link to
    it), and one with other hard links could be written through them: both
    refused. `given` is the path as the user gave it."""
    absolute = Path(os.path.abspath(given))
    if not _inside(absolute, workspace):
        return None
    try:
        resolved = real(absolute)
    except (PathLoop, OSError):
        return None
    if resolved != absolute:
        return (f"the fleet file {absolute} is reached through a symlink inside this workspace, which the agent "
                f"could re-point; use the file itself ({resolved})")
    try:
        links = os.stat(resolved).st_nlink
    except OSError:
        return None
    if links > 1:  # another name for the same bytes may lie in the workspace, writable
        return (f"the fleet file {absolute} has {links} hard links; an agent could change it through another one "
                "inside this workspace: make it a file of its own (cp, then mv over it)")
    return None
