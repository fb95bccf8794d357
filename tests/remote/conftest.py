"""The remote engine for tests: a second dockerd in a network namespace of its own,
behind an sshd, reachable as `ssh NAME` (scripts/remote-engine.sh, REMOTE.md).

`remote_engine` (session) brings one up and tears it down afterwards, checking that
nothing is left. It never skips: when it cannot start, the tests error with the
script's output. FLEET_TEST_REMOTE=NAME uses (and keeps) an engine of that name,
to save the start-up while working on these tests.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "remote-engine.sh"


@dataclass(frozen=True)
class RemoteEngine:
    name: str  # also the ssh alias (a Host block in root's ~/.ssh/config)
    netns: str
    host_ip: str  # this machine's side of the veth pair
    remote_ip: str  # the namespace's side (sshd listens there)
    bridge_ip: str  # docker0 of the second engine: its containers reach the "remote machine" there
    docker_host: str  # unix:// socket of the second engine, for assertions from this side

    def docker(self):
        """A client straight on the second engine's socket (not through ssh): what the
        remote machine itself would see."""
        import docker

        return docker.DockerClient(base_url=self.docker_host, timeout=60)

    def script(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)

    def dockerd_pid(self) -> int | None:
        try:
            return int(Path(f"/run/fleet-remote/{self.name}/docker.pid").read_text())
        except (OSError, ValueError):
            return None


def _fields(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def start(name: str) -> RemoteEngine:
    r = subprocess.run(["bash", str(SCRIPT), "up", name], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        # whatever came up is taken down again, then every test using it errors with the reason
        d = subprocess.run(["bash", str(SCRIPT), "down", "--purge", name], capture_output=True, text=True, timeout=180)
        pytest.fail(f"the remote engine {name} did not start (scripts/remote-engine.sh up {name}):\n{r.stdout}{r.stderr}"
                    + (f"\n(and `down --purge {name}` failed: {d.stderr})" if d.returncode else ""), pytrace=False)
    f = _fields(r.stdout)
    return RemoteEngine(name=name, netns=f["netns"], host_ip=f["host_ip"], remote_ip=f["remote_ip"],
                        bridge_ip=f["bridge_ip"], docker_host=f["docker_host"])


def leftovers(engine: RemoteEngine) -> list[str]:
    """What `down` should have removed and did not."""
    left = []
    if Path(f"/var/run/netns/{engine.netns}").exists():
        left.append(f"netns {engine.netns}")
    if subprocess.run(["ip", "link", "show", f"fr-{engine.name}"], capture_output=True).returncode == 0:
        left.append(f"veth fr-{engine.name}")
    if Path(f"/run/fleet-remote/{engine.name}").exists():
        left.append(f"/run/fleet-remote/{engine.name}")
    config = Path(os.path.expanduser("~root")) / ".ssh" / "config"
    if config.exists() and f"Host {engine.name}\n" in config.read_text():
        left.append(f"the Host {engine.name} block in {config}")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f"fleet-remote/{engine.name}/" in cmd:
                left.append(f"process {pid}: {cmd[:120]}")
    return left


@pytest.fixture(scope="session")
def remote_engine() -> RemoteEngine:
    keep = os.environ.get("FLEET_TEST_REMOTE")
    name = keep or f"rt{os.getpid() % 1000000}"
    engine = start(name)
    yield engine
    if keep:
        return
    r = engine.script("down", "--purge", name)
    assert r.returncode == 0, f"scripts/remote-engine.sh down {name} failed:\n{r.stdout}{r.stderr}"
    left = leftovers(engine)
    assert not left, f"`down {name}` left: {left}"
