"""Per-agent working directories: keep agents that should not share files apart.

`workspace:` is a directory mounted at /workspace. In `shared` mode that is the
directory itself; in `copy` mode a copy made once under
$FLEET_HOME/workspaces/<fleet>/<owner>; in `worktree` mode a git worktree of the
repository on its own branch (default fleet/<owner>). Preparing is idempotent
(done before every create, a no-op once it exists). Releasing never deletes
work: a worktree with uncommitted changes or commits no other ref holds is kept,
copies are kept until `fleet destroy --purge-workspaces`.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.errors import FleetError
from reconciler.state.home import fleet_home
from reconciler.core.model import Workspace


@dataclass(frozen=True)
class Mounts:
    """What to bind for a workspace: the directory for /workspace, extra binds
    (host path -> same path inside, for git's worktree metadata), extra env."""

    workspace: Path
    extra: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # host path -> path inside, mounted read-only: files an agent must not change
    read_only: dict[str, str] = field(default_factory=dict)


def root(fleet: str) -> Path:
    return fleet_home() / "workspaces" / fleet


def location(fleet: str, owner: str) -> Path:
    return root(fleet) / owner


def branch_of(ws: Workspace, owner: str) -> str:
    return ws.branch or f"fleet/{owner}"


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise FleetError(f"git {' '.join(args)} in {cwd} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def is_git_repo(path: Path) -> bool:
    return (path / ".git").exists()


# git inside the container runs as another user than the one owning the files
SAFE_DIRECTORY_ENV = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*"}


def prepare(fleet: str, owner: str, ws: Workspace) -> Mounts:
    """Make the directory to mount exist; return what to mount."""
    if ws.mode == "shared":
        extra, read_only = protect(ws.path, ws.read_only)
        return Mounts(workspace=ws.path, extra=extra, read_only=read_only)
    dest = location(fleet, owner)
    if ws.mode == "copy":
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{owner}.copying")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(ws.path, tmp, symlinks=True)
            except (OSError, shutil.Error) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise FleetError(f"cannot copy workspace {ws.path} to {dest}: {exc}") from None
            tmp.rename(dest)  # atomic: a half-made copy is never mounted
        return Mounts(workspace=dest)
    # worktree
    if not is_git_repo(ws.path):
        raise FleetError(f"workspace {ws.path} is not a git repository (mode: worktree needs one)")
    branch = branch_of(ws, owner)
    if not (dest / ".git").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        _git(ws.path, "worktree", "prune")
        exists = _git(ws.path, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False)
        if exists:
            _git(ws.path, "worktree", "add", str(dest), branch)
        else:
            _git(ws.path, "worktree", "add", "-b", branch, str(dest))
    common = Path(_git(ws.path, "rev-parse", "--path-format=absolute", "--git-common-dir"))
    # the repository's config and hooks run code on this machine (core.fsmonitor,
    # hooks/post-checkout) when the user runs git: the agent may not change them
    (common / "hooks").mkdir(exist_ok=True)
    read_only = {str(common / n): str(common / n) for n in ("config", "hooks") if (common / n).exists()}
    return Mounts(workspace=dest, extra={str(common): str(common)}, env=dict(SAFE_DIRECTORY_ENV), read_only=read_only)


def protect(source: Path, files: tuple[str, ...], inside: str = "/workspace") -> tuple[dict[str, str], dict[str, str]]:
    """Binds that keep `files` (relative to `source`) from being changed, replaced
    or deleted by the agent: each file read-only at its place, and each directory
    between the workspace and the file bound onto itself read-write, so it is a
    mount point that cannot be renamed away (rename and unlink of a mount point
    fail with EBUSY). Returns (read-write binds, read-only binds)."""
    rw: dict[str, str] = {}
    ro: dict[str, str] = {}
    for rel in files:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            sub = "/".join(parts[:i])
            rw[str(source / sub)] = f"{inside}/{sub}"
        if (source / rel).is_file():
            ro[str(source / rel)] = f"{inside}/{rel}"
    return rw, ro


def unsaved_work(fleet: str, owner: str, ws: Workspace) -> str | None:
    """Why the workspace of `owner` must be kept, or None when nothing would be lost."""
    dest = location(fleet, owner)
    if ws.mode == "shared" or not dest.exists():
        return None
    if ws.mode == "copy":
        return "copies are kept until `fleet destroy --purge-workspaces`"
    if _git(dest, "status", "--porcelain", check=False):
        return "it has uncommitted changes"
    branch = branch_of(ws, owner)
    unique = _git(
        dest, "rev-list", branch, "--not", f"--exclude={branch}", "--branches", "--remotes", "--tags",
        check=False,
    )
    if unique:
        n = len(unique.splitlines())
        return f"branch {branch} has {n} commit{'s' if n != 1 else ''} no other branch holds"
    return None


def release(fleet: str, owner: str, ws: Workspace | None) -> str | None:
    """After an agent is destroyed: remove its worktree when nothing would be
    lost, else keep it and say where it is. Returns a note for the user."""
    if ws is None or ws.mode == "shared":
        return None
    dest = location(fleet, owner)
    if not dest.exists():
        return None
    reason = unsaved_work(fleet, owner, ws)
    if reason:
        return f"kept workspace of {owner} at {dest}: {reason}"
    _git(ws.path, "worktree", "remove", str(dest))
    _git(ws.path, "branch", "-d", branch_of(ws, owner), check=False)
    return f"removed clean worktree of {owner} ({dest})"


def copies(fleet: str) -> tuple[str, ...]:
    """The owners (agents, hosts) the fleet has a copy or worktree for."""
    base = root(fleet)
    try:
        return tuple(sorted(e.name for e in base.iterdir() if e.is_dir() and not e.is_symlink()))
    except OSError:
        return ()


def purge_one(fleet: str, owner: str) -> str | None:
    """Remove `owner`'s copy or worktree, unsaved work included (explicit:
    --purge-workspaces); its path, or None when there was none."""
    entry = location(fleet, owner)
    if not entry.is_dir() or entry.is_symlink():
        return None
    git_file = entry / ".git"
    if git_file.is_file():  # a worktree: let git forget it too
        gitdir = git_file.read_text().split(":", 1)[-1].strip()
        common = Path(gitdir).parent.parent
        subprocess.run(["git", "--git-dir", str(common), "worktree", "remove", "--force", str(entry)], capture_output=True)
    shutil.rmtree(entry, ignore_errors=True)
    return str(entry)

