"""Fixtures shared by the whole suite: an isolated FLEET_HOME, the real Docker
engine, the locally built base image, and a way to run the real `fleet` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

# The fake Modal server's fixtures (fake_modal, modal_client, modal_env, modal_app), here
# once so tests/fakes and tests/modal share one server per session (per xdist worker);
# tests.parallel: how `make test` spreads test files over workers.
pytest_plugins = ["tests.fakes.modal.fixtures", "tests.parallel"]

BASE_IMAGE = os.environ.get("FLEET_BASE_IMAGE", "fleet-base:bookworm")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fleet_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own FLEET_HOME; nothing touches ~/.fleet. A routing
    proxy started under it (by `fleet apply`) is stopped afterwards."""
    home = tmp_path_factory.mktemp("fleet-home")
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.delenv("FLEET_FILE", raising=False)
    yield home
    if (home / "proxy.pid").exists():
        from reconciler.routing import daemon

        daemon.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (proxy.port in test fleets, backends)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.2):
    """Poll `predicate` until it returns something true (returned), within
    `timeout` seconds; an exception counts as "not yet". On timeout the test
    fails with the last value or error seen. Every wait in the suite is this one."""
    import time

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # e.g. a container not there yet
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"no Docker engine answers ({exc}); run `make engine` (make test does it)")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    try:
        docker_client.images.get(BASE_IMAGE)
    except Exception:  # pragma: no cover - environment problem
        pytest.fail(f"image {BASE_IMAGE} is missing; run `make base-image` (make test does it)")
    return BASE_IMAGE


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_fleet(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180, input: str | None = None) -> Run:
    """Run the real CLI in a subprocess (exit codes, output and no shared state)."""
    full_env = dict(os.environ)
    full_env.update({"NO_COLOR": "1", "COLUMNS": "200"})
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", *args], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout, input=input,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def cleanup_fleet(client, fleet: str) -> None:
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        try:
            c.remove(force=True)
        except Exception:
            pass
    for v in client.volumes.list(filters={"label": f"dev.fleet.project={fleet}"}):
        try:
            v.remove(force=True)
        except Exception:
            pass
    for img in client.images.list(filters={"label": f"dev.fleet.project={fleet}"}):
        try:
            client.images.remove(img.id, force=True)
        except Exception:
            pass


@pytest.fixture
def fleet_name(docker_client):
    """A unique fleet name for one test; everything it owns is removed after."""
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    cleanup_fleet(docker_client, name)


class Terminal:
    """The real `fleet` CLI on a real pseudo-terminal (attach, exec -it):
    `read_until` waits for output, `write` types, `exit_code` waits for the end."""

    def __init__(self, *args: str, env: dict | None = None, size: tuple[int, int] | None = None):
        import pty

        self.seen = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: the CLI with a terminal on stdin/stdout
            if size is not None:  # (rows, columns) of the terminal, set before the CLI starts
                import fcntl
                import struct
                import termios

                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
            os.environ.update({**(env or {}), "NO_COLOR": "1"})
            os.execv(sys.executable, [sys.executable, "-m", "reconciler", *args])

    def read_until(self, marker: bytes, timeout: float = 30) -> bytes:
        import select
        import time

        deadline = time.monotonic() + timeout
        while marker not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096)
                except OSError:  # the child closed its side
                    break
        return self.seen

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        os.close(self.fd)
