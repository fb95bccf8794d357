"""Every command meets a read-only or full FLEET_HOME with one clear line, exit
1 and no traceback (`grant set` and `proxy start` used to raise OSError), and
the CA bundle agents bind-mount is never left cut short by a full disk.
The read-only and full cases mount a small tmpfs (root only; skipped otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.core.errors import FleetError
from reconciler.grants import trust
from tests.conftest import run_fleet

from .test_fleet_home import fill, mounts  # noqa: F401  (the tmpfs fixture)

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/fleet-tests/docker.sock"}
COMMANDS = [
    ("grant", "set", "github"),
    ("grant", "set", "mytoken"),
    ("proxy", "start"),
    ("ca", "path"),
]


def files(home: Path) -> list[str]:
    """Every non-empty file under `home` (empty directories and lock files need no
    space: a full tmpfs still makes them)."""
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and p.stat().st_size)


def home_for(kind: str, tmp_path: Path, mount) -> Path:
    if kind == "read-only":
        return mount(tmp_path / "ro-home", "size=64k,mode=0755,ro")
    home = mount(tmp_path / "full-home", "size=64k,mode=0700")
    fill(home)
    return home


@pytest.mark.parametrize("kind", ["read-only", "full"])
@pytest.mark.parametrize("cmd", COMMANDS, ids=["-".join(c) for c in COMMANDS])
def test_writing_commands_give_one_line_on_an_unwritable_fleet_home(kind, cmd, tmp_path, mounts):  # noqa: F811
    home = home_for(kind, tmp_path, mounts)
    before = files(home)
    r = run_fleet(*cmd, env={"FLEET_HOME": str(home), **NO_ENGINE}, input="s3cret-token\n", timeout=60)
    assert r.code == 1, r.text
    assert "Traceback" not in r.text and "bug in fleet" not in r.text, r.text
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(home) in lines[0], r.err
    assert "s3cret" not in r.text
    assert files(home) == before, "no file, temporary or half-written, is left behind"


def test_ca_bundle_is_never_left_cut_short_by_a_full_disk(tmp_path, mounts, monkeypatch):  # noqa: F811
    home = mounts(tmp_path / "home", "size=1m,mode=0700")
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.setattr(trust, "system_cas", lambda: b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" * 100)
    path = trust.ensure_bundle()
    first, inode = path.read_bytes(), path.stat().st_ino
    fill(home)
    bigger = b"-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n" * 4000  # about 230 KB more than is free
    monkeypatch.setattr(trust, "system_cas", lambda: bigger)
    with pytest.raises(FleetError, match="No space left on device"):
        trust.ensure_bundle()
    assert path.read_bytes() == first, "the bundle agents trust is whole, as it was"
    assert path.stat().st_ino == inode
    os.unlink(home / "filler")
    assert trust.ensure_bundle() == path
    assert path.read_bytes().startswith(bigger) and path.stat().st_ino == inode, "rewritten in place once there is room"


def test_only_errors_about_fleets_state_get_the_fleet_home_line(tmp_path, monkeypatch):
    import errno

    from reconciler.state.home import unwritable_line

    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fh"))
    inside = OSError(errno.EROFS, "Read-only file system", str(tmp_path / "fh" / "routes.json"))
    assert "FLEET_HOME" in unwritable_line(inside) and "routes.json" in unwritable_line(inside)
    assert unwritable_line(OSError(errno.EROFS, "Read-only file system", "/elsewhere/x")) is None
    assert unwritable_line(OSError(errno.ENOENT, "No such file", str(tmp_path / "fh" / "x"))) is None
    assert "free some space" in unwritable_line(OSError(errno.ENOSPC, "No space left on device"))
