"""The hash of a build context: what, when changed, means a new image.

Each file's path and a sha256 of its bytes, read in chunks (a multi-gigabyte
file costs one buffer, not its size in memory), walked in sorted order without
following symlinks (a link's target text is hashed, so a link to /dev/zero does
not hang). Files that `.dockerignore` leaves out of the build are left out of
the hash too, with Docker's own matching rules (docker-py's), so editing an
ignored file does not rebuild. For a context without `.dockerignore` the hash
is byte-for-byte what earlier versions computed, so image tags do not change
on upgrade.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv"}
CHUNK = 1024 * 1024


def _ignore_rules(context: Path, dockerfile: str) -> tuple[Callable[[str], bool], Callable[[str], bool]] | None:
    """(is_ignored(rel), may_prune_dir(rel)) from `.dockerignore`, or None."""
    path = context / ".dockerignore"
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError:
        return None
    patterns = [ln.strip() for ln in text.splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    if not patterns:
        return None
    from docker.utils.build import PatternMatcher, normalize_slashes

    matcher = PatternMatcher(patterns + [f"!{dockerfile}"])

    def prunable(rel: str) -> bool:
        if not matcher.matches(rel):
            return False
        # an exception below it (`!dir/keep`) means the directory must be walked
        return not any(p.exclusion and p.cleaned_pattern.startswith(normalize_slashes(rel)) for p in matcher.patterns)

    return matcher.matches, prunable


def file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.digest()


def context_hash(context: Path, dockerfile: str, args: dict[str, str]) -> str:
    """A hash of everything that goes into a build: each file's path and bytes,
    the Dockerfile's name and the build args."""
    h = hashlib.sha256()
    h.update(dockerfile.encode() + b"\0")
    for k in sorted(args):
        h.update(f"{k}={args[k]}\0".encode())
    rules = _ignore_rules(context, dockerfile)
    for root, dirs, files in os.walk(context):
        rel_root = Path(root).relative_to(context).as_posix()
        prefix = "" if rel_root == "." else rel_root + "/"
        keep = sorted(d for d in dirs if d not in SKIP_DIRS)
        if rules is not None:
            keep = [d for d in keep if not rules[1](prefix + d)]
        dirs[:] = keep
        for name in sorted(files):
            rel = prefix + name
            if rules is not None and rules[0](rel):
                continue
            p = Path(root) / name
            h.update(rel.encode() + b"\0")
            try:
                if p.is_symlink():  # hash where it points, never follow
                    h.update(b"link:" + os.readlink(p).encode())
                elif p.is_file():
                    h.update(file_digest(p))
                else:
                    h.update(b"<special>")
            except OSError:
                h.update(b"<unreadable>")
    return h.hexdigest()
