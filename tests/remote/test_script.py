"""scripts/remote-engine.sh: `up` is idempotent, `status` says what runs, the
remote side sees the second engine as /var/run/docker.sock, and `down` removes all
of it (the session fixture checks that too, after its own `down`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BASE_IMAGE
from tests.remote.conftest import leftovers, start

pytestmark = pytest.mark.docker


def fields(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_up_again_changes_nothing_and_status_reports_it(remote_engine):
    before = fields(remote_engine.script("status", remote_engine.name).stdout)
    r = remote_engine.script("up", remote_engine.name)
    assert r.returncode == 0, r.stderr
    after = fields(r.stdout)
    assert after == before
    assert after["engine"] == "up" and after["ssh_config"] == "present"
    assert after["dockerd_pid"] and after["sshd_pid"]
    config = (Path(os.path.expanduser("~root")) / ".ssh" / "config").read_text()
    assert config.count(f"\nHost {remote_engine.name}\n") + config.startswith(f"Host {remote_engine.name}\n") == 1
    # its binary is not called dockerd: `pkill -x dockerd` (the engine-restart test) spares it
    assert Path(f"/proc/{after['dockerd_pid']}/comm").read_text().strip() == "fleet-remoted"


def test_over_ssh_the_remote_side_sees_the_second_engine(remote_engine):
    r = subprocess.run(["ssh", remote_engine.name, "docker info --format '{{.DockerRootDir}}'; ls /run"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    root, *run = r.stdout.split()
    assert root == f"/var/lib/fleet-remote/{remote_engine.name}/docker"
    assert "fleet-remote" not in run  # this machine's /run is not visible there


@pytest.mark.slow
def test_a_full_up_and_down_cycle_leaves_nothing(tmp_path):
    name = f"rc{os.getpid() % 1000000}"
    engine = start(name)
    try:
        assert engine.docker().containers.run(BASE_IMAGE, ["true"], remove=True) == b""
        assert subprocess.run(["ssh", name, "true"], timeout=30).returncode == 0
    finally:
        for _ in range(2):  # twice: down is idempotent
            r = engine.script("down", "--purge", name)
            assert r.returncode == 0, r.stdout + r.stderr
    assert leftovers(engine) == []
    assert engine.script("status", name).returncode == 1
    assert not Path(f"/var/lib/fleet-remote/{name}").exists()
