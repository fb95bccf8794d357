"""The Docker engine stopped and started under a running watcher is survived.

The engine restarted here is a dockerd of the test's own (its own socket, data
root and exec root, its own bridge, no iptables), started and stopped by its pid, so
the shared engine other tests use is never disturbed. The directory is named
zz_ so that `make test` collects it last anyway.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.watch.proc import WatchProcess

pytestmark = [pytest.mark.docker, pytest.mark.engine_restart]

IMAGE = "fleet-engine-test:1"


class PrivateEngine:
    """A dockerd of our own, stopped and started by its pid (never by name)."""

    def __init__(self) -> None:
        dockerd = shutil.which("dockerd")
        if dockerd is None or os.geteuid() != 0:
            pytest.skip("needs root and dockerd to run a private Docker engine")
        self.root = Path(tempfile.mkdtemp(prefix="fe-", dir="/tmp"))  # short: socket paths are limited
        # run it under a name of its own (no "dockerd" in it), so that whoever
        # restarts the shared engine by name (`pkill dockerd`, `pgrep -x dockerd`
        # in scripts/ensure-docker.sh) neither hits nor counts this one
        self.dockerd = str(self.root / "fleet-engine-t")
        os.symlink(dockerd, self.dockerd)
        self.url = f"unix://{self.root}/d.sock"
        self.proc: subprocess.Popen | None = None
        # A bridge of its own: a dockerd started with `--bridge none` deletes
        # the default docker0 interface, which would cut the shared engine's
        # containers off the network (seen here: every later container failed
        # with "could not find bridge docker0").
        self.bridge = f"fleet-t{os.getpid() % 100000}"
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "10.213.213.1/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            [
                self.dockerd, "--host", self.url, "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "x"), "--pidfile", str(self.root / "d.pid"),
                "--bridge", self.bridge, "--iptables=false", "--ip6tables=false", "--ip-masq=false",
            ],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"private dockerd did not answer; log:\n{(self.root / 'dockerd.log').read_text()[-3000:]}")

    def answers(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.url, timeout=5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False

    def stop(self, timeout: float = 90.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while self.answers() and time.monotonic() < deadline:
            time.sleep(0.2)

    def remove_bridge(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def log_tail(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text()[-4000:]
        except OSError:
            return ""

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.url, timeout=60)

    def remove(self) -> None:
        self.stop()
        self.remove_bridge()
        shutil.rmtree(self.root, ignore_errors=True)


def load_image(engine: PrivateEngine, base_image: str) -> None:
    """A tiny image from the host's static busybox when there is one (instant),
    else the base image copied over (slower)."""
    client = engine.client()
    try:
        busybox = shutil.which("busybox")
        if busybox:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(busybox, arcname="bin/busybox")
                for name in ("sh", "sleep", "cat", "env"):
                    info = tarfile.TarInfo(f"bin/{name}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(info)
            client.api.import_image_from_data(buf.getvalue(), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1])
            try:
                client.containers.run(IMAGE, ["sh", "-c", "true"], remove=True)
                return
            except Exception:  # a dynamically linked busybox: fall back
                client.images.remove(IMAGE, force=True)
        save = subprocess.Popen(["docker", "save", base_image], stdout=subprocess.PIPE)
        client.images.load(save.stdout.read())
        save.wait(timeout=120)
        client.images.get(base_image).tag(IMAGE)
    finally:
        client.close()


def agents(client, fleet: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        name = c.labels["dev.fleet.agent"]
        assert name not in out, f"two containers for agent {name}"
        out[name] = c
    return out


def fleet_yaml(fleet: str, mode: str) -> str:
    return textwrap.dedent(f"""
        fleet: {fleet}
        defaults:
          image: {IMAGE}
          command: ["sleep", "100000"]
        agents:
          a: {{}}
          b:
            env: {{MODE: {mode}}}
        """).lstrip()


def test_the_engine_restarted_under_the_watcher_is_survived(tmp_path, base_image):
    engine = PrivateEngine()
    watcher = None
    try:
        engine.start()
        load_image(engine, base_image)
        fleet = "t" + uuid.uuid4().hex[:10]
        path = tmp_path / "fleet.yaml"
        path.write_text(fleet_yaml(fleet, "one"))
        watcher = WatchProcess(path, "--resync", "5", env={"DOCKER_HOST": engine.url})
        watcher.wait_for(r"watching fleet\.yaml", timeout=120)
        client = engine.client()
        before = agents(client, fleet)
        client.close()
        assert set(before) == {"a", "b"}

        mark = watcher.mark()
        engine.stop()
        watcher.wait_for(r"Docker engine|cannot list containers", after=mark, timeout=60)
        path.write_text(fleet_yaml(fleet, "two"))  # an edit while the engine is away
        time.sleep(0.5)  # let the watcher see it (and fail to observe) before the engine is back

        engine.start()
        watcher.wait_for(r"Docker engine answers again", after=mark, timeout=90)
        watcher.wait_for(r"replaced agent b", after=mark, timeout=90)

        client = engine.client()
        try:
            def converged():
                now = agents(client, fleet)
                for c in now.values():
                    c.reload()
                return now if set(now) == {"a", "b"} and all(c.status == "running" for c in now.values()) else None

            deadline = time.monotonic() + 60
            now = converged()
            while now is None and time.monotonic() < deadline:
                time.sleep(0.5)
                now = converged()
            assert now is not None, f"not converged:\n{watcher.text()}"
            assert now["a"].id == before["a"].id  # untouched agents are not re-created
            assert "MODE=two" in now["b"].attrs["Config"]["Env"]
            assert all(c.labels["dev.fleet.project"] == fleet for c in now.values())
        finally:
            client.close()
        assert watcher.proc.poll() is None, watcher.text()
    except BaseException:
        print(f"--- private dockerd log ---\n{engine.log_tail()}")
        if watcher is not None:
            print(f"--- watcher ---\n{watcher.text()}")
        raise
    finally:
        if watcher is not None:
            watcher.close()
        engine.remove()
