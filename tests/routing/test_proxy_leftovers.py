"""A proxy start that fails leaves nothing behind: exit 1 with one line, no
daemon process (found by its FLEET_HOME in /proc), no port in the table. And
`fleet destroy` of the last fleet with routes stops the proxy."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from reconciler.routing import daemon
from reconciler.routing.table import read_table
from tests.conftest import free_port, run_fleet, wait_for


def proxies_under(home: Path) -> list[int]:
    """Pids of proxy processes whose FLEET_HOME is `home`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"reconciler.routing.daemon" in cmd and f"FLEET_HOME={home}".encode() in env:
            found.append(int(entry.name))
    return found


@pytest.fixture
def busy_port():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    yield taken.getsockname()[1]
    taken.close()


def test_failed_proxy_start_exits_1_and_leaves_no_process(fleet_home, busy_port):
    r = run_fleet("proxy", "start", "--port", str(busy_port))
    assert r.code == 1, r.text
    assert f"port {busy_port}" in r.err and "already in use" in r.err and "Traceback" not in r.text
    assert daemon.running_pid() is None and not (fleet_home / "proxy.pid").exists()
    wait_for(lambda: not proxies_under(fleet_home), timeout=10, what="no proxy process left")
    assert busy_port not in {x.port for x in read_table().listen}  # the next start does not trip on it
    # and a start on a free port works right after
    port = free_port()
    r = run_fleet("proxy", "start", "--port", str(port))
    assert r.code == 0, r.text
    pid = daemon.running_pid()
    assert proxies_under(fleet_home) == [pid]
    # a running proxy asked for a busy port: exit 1, the proxy keeps serving the rest
    r = run_fleet("proxy", "start", "--port", str(busy_port))
    assert r.code == 1 and "already in use" in r.err, r.text
    assert daemon.running_pid() == pid
    assert {x.port for x in read_table().listen} == {port}
    assert daemon.stop() == pid
    wait_for(lambda: not proxies_under(fleet_home), timeout=10, what="proxy gone after stop")


@pytest.mark.docker
def test_destroy_of_the_last_fleet_with_routes_stops_the_proxy(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    from tests.conftest import cleanup_fleet

    port = free_port()
    files = {}
    for name in (fleet_name, fleet_name + "b"):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(
            f"fleet: {name}\nproxy: {{port: {port}}}\n"
            f"agents:\n  web-{name}: {{image: {base_image}, command: [sleep, infinity], ports: {{web: 3000}}}}\n"
        )
    try:
        for path in files.values():
            r = run_fleet("apply", "--yes", str(path))
            assert r.code == 0, r.text
        pid = daemon.running_pid()
        assert pid is not None
        r = run_fleet("destroy", "--yes", str(files[fleet_name]))
        assert r.code == 0, r.text
        assert daemon.running_pid() == pid and "stopped the fleet proxy" not in r.out  # the other fleet still routes
        r = run_fleet("destroy", "--yes", str(files[fleet_name + "b"]))
        assert r.code == 0, r.text
        assert f"stopped the fleet proxy (pid {pid})" in r.out, r.out
        assert daemon.running_pid() is None
        wait_for(lambda: not proxies_under(fleet_home), timeout=10, what="no proxy process left")
    finally:
        cleanup_fleet(docker_client, fleet_name + "b")
