"""Where fleet keeps user state: `$FLEET_HOME` (default ~/.fleet).

The CA, the credential store, the route table, the proxy's pid and log, locks.
Tests always point FLEET_HOME at a temporary directory.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


def fleet_home() -> Path:
    raw = os.environ.get("FLEET_HOME")
    home = Path(raw).expanduser() if raw else Path.home() / ".fleet"
    return home


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    return path


def locks_dir() -> Path:
    return ensure_dir(fleet_home() / "locks")


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600, exclusive: bool = False) -> None:
    """Replace `path` with `data` all at once: a reader (or a crash) never sees a
    half-written file. Written beside it, flushed to disk, then renamed; the
    temporary file is removed whatever goes wrong. `exclusive`: never replace an
    existing file (a file made concurrently wins). Raises OSError."""
    import tempfile

    blob = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        exc.filename = exc.filename or str(path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not exc.filename:  # ENOSPC from write() names no file
            exc.filename = str(path)
        raise


# the errors a FLEET_HOME that is read-only, full or not a directory gives
UNWRITABLE = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def unwritable_line(exc: OSError) -> str | None:
    """One line for an OSError about fleet's own state (a file under
    $FLEET_HOME, or a full/read-only disk with no file named), or None when
    the error is about something else."""
    home = fleet_home()
    name = exc.filename
    about_home = False
    if name:
        try:
            p = Path(os.fsdecode(name)).absolute()
            h = home.absolute()
            about_home = p == h or h in p.parents or p in h.parents
        except (TypeError, ValueError):
            about_home = False
    elif exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        about_home = True
    if not about_home or exc.errno not in UNWRITABLE:
        return None
    what = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = "free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it a writable directory"
    if not name:  # the write that failed named no file: say where fleet's state lives, blame nothing else
        return f"cannot write: {what}; {hint} (fleet keeps its state in FLEET_HOME {home}, or point FLEET_HOME elsewhere)"
    where = f" ({os.fsdecode(name)})" if Path(os.fsdecode(name)).absolute() != home.absolute() else ""
    return f"cannot write fleet's state under FLEET_HOME {home}{where}: {what}; {hint} (or point FLEET_HOME elsewhere)"


def write_record(directory: Path, name: str, entry: dict) -> None:
    """One small JSON record per agent (messages, stops): `<directory>/<name>.json`."""
    write_atomic(ensure_dir(directory) / f"{name}.json", json.dumps(entry))


def read_records(directory: Path) -> dict[str, dict]:
    """name -> record for every `<name>.json` in `directory` (one listing; unreadable ones skipped)."""
    out: dict[str, dict] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    for name in names:
        if name.endswith(".json") and not name.startswith("."):
            try:
                entry = json.loads((directory / name).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict):
                out[name[:-5]] = entry
    return out
