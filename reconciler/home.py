"""Where fleet keeps user state: `$FLEET_HOME` (default ~/.fleet).

The CA, the credential store, the route table, the proxy's pid and log, locks.
Tests always point FLEET_HOME at a temporary directory.
"""

from __future__ import annotations

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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
