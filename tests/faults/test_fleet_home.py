"""A FLEET_HOME that cannot be written: a file where the directory should be, a
read-only filesystem, a full disk (a 64 KiB tmpfs filled up). Each gives a
clear message, exit 1 and no traceback, and the next apply with a healthy
FLEET_HOME converges from whatever was left.

The read-only and full cases mount a tmpfs (root only; skipped otherwise):
permission bits do not stop root, a read-only mount does.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, run_fleet

from .helpers import assert_converged, assert_noop, by_agent, fleet_file

pytestmark = pytest.mark.docker

N = 3
AGENTS = {f"a{i}" for i in range(N)}


@pytest.fixture
def mounts():
    """mount(path, options) a small tmpfs; all unmounted afterwards."""
    made: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        made.append(path)
        return path

    yield mount
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write zeros until the filesystem is full."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def broken_home(kind: str, tmp_path: Path, mount) -> Path:
    if kind == "file":
        home = tmp_path / "home-is-a-file"
        home.write_text("not a directory\n")
    elif kind == "read-only":
        home = mount(tmp_path / "ro-home", "size=64k,mode=0755,ro")
    else:
        home = mount(tmp_path / "full-home", "size=64k,mode=0700")
        fill(home)
    return home


def one_clear_line(r, home: Path) -> str:
    assert r.code == 1, r.text
    assert "Traceback" not in r.text, r.text
    lines = [l for l in r.err.splitlines() if l.strip()]
    assert len(lines) == 1, r.err
    assert "FLEET_HOME" in lines[0] or str(home) in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", [
    "file",
    "read-only",
    "full",
])
def test_unwritable_fleet_home_is_one_line_and_changes_nothing(kind, tmp_path, docker_client, base_image, fleet_name, mounts):
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N)
    home = broken_home(kind, tmp_path, mounts)
    for cmd in (("apply", "--yes"), ("destroy", "--yes")):
        r = run_fleet(*cmd, str(path), env={"FLEET_HOME": str(home)})
        one_clear_line(r, home)
        assert by_agent(docker_client, fleet_name) == {}, "nothing may change when the lock cannot be taken"
    r = run_fleet("apply", "--yes", str(path))  # the healthy FLEET_HOME of the test
    assert r.code == 0, r.text
    assert_converged(docker_client, fleet_name, AGENTS)
    assert_noop(path)


def test_disk_full_after_the_lock_fails_the_route_write_and_the_next_apply_converges(
    tmp_path, docker_client, base_image, fleet_name, mounts, fleet_home
):
    """The lock file exists already (its page is reused), so the apply gets past
    the lock; the next write under FLEET_HOME (an agent's CA bundle and hosts
    file, or the route table) hits ENOSPC, said in one line per failed action."""
    proxy_port = free_port()
    path = fleet_file(tmp_path / "fleet.yaml", fleet_name, base_image, N, ports={"web": 3000}, proxy_port=proxy_port)
    home = mounts(tmp_path / "full-home", "size=64k,mode=0700")
    (home / "locks").mkdir(mode=0o700)
    (home / "locks" / f"{fleet_name}.lock").write_text("x" * 512)
    fill(home)
    r = run_fleet("apply", "--yes", str(path), env={"FLEET_HOME": str(home)})
    assert r.code == 1, r.text
    assert "Traceback" not in r.text, r.text
    assert "No space left on device" in r.text and str(home) in r.text, r.text

    r = run_fleet("apply", "--yes", str(path))  # healthy FLEET_HOME: converges from whatever was left
    assert r.code == 0, r.text
    assert_converged(docker_client, fleet_name, AGENTS)
    assert fleet_name in (fleet_home / "routes.json").read_text()
    assert_noop(path)
