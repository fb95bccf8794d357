"""The proxy as a background process, and the `fleet proxy` / `fleet ca` commands."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest
from typer.testing import CliRunner

import reconciler.cli.routing  # noqa: F401  (registers `fleet proxy` and `fleet ca`)
from reconciler.cli.app import app
from reconciler.core.errors import FleetError
from reconciler.routing import daemon
from reconciler.routing.table import Listen, Route, set_fleet_routes

from .helpers import free_port, get_json, wait_until


@pytest.fixture
def proxy_daemon(fleet_home):
    """Stops whatever proxy a test started, even when it fails."""
    yield daemon
    pid = daemon.running_pid()
    if pid is not None:
        daemon.stop()


def _route(agent: str, target: str) -> Route:
    return Route(agent=agent, service="web", container_port=3000, target=target)


def test_start_serve_restart_routes_survive(proxy_daemon, backends, port, tls, fleet_home):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("dark-mode", a.url), _route("gone", f"http://127.0.0.1:{free_port()}")])
    state = daemon.start()
    pid = state["pid"]
    assert {"bind": "127.0.0.1", "port": port} in state["listening"]
    assert (fleet_home / "proxy.pid").read_text().strip() == str(pid)
    assert get_json("web.dark-mode.localhost", port, tls=tls)["backend"] == "A"
    assert daemon.start()["pid"] == pid  # idempotent
    assert daemon.ensure_running()["pid"] == pid

    st = daemon.status()
    assert st.running and st.pid == pid and st.ca.endswith("ca/ca.crt")
    health = {r.agent: r.healthy for r in st.routes}
    assert health == {"dark-mode": True, "gone": False}
    assert st.routes[0].urls == [f"https://web.dark-mode.localhost:{port}"]

    assert daemon.stop() == pid
    assert daemon.running_pid() is None and not (fleet_home / "proxy.pid").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 2).close()
    assert daemon.stop() is None

    pid2 = daemon.start()["pid"]
    assert pid2 != pid
    assert get_json("web.dark-mode.localhost", port, tls=tls)["backend"] == "A"
    assert "listening on 127.0.0.1:%d" % port in (fleet_home / "proxy.log").read_text()


def test_killed_proxy_is_replaced(proxy_daemon, backends, port):
    a = backends("A")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    pid = daemon.start()["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: daemon.running_pid() is None, what="lock released")
    pid2 = daemon.start()["pid"]  # the stale pid file does not fool it
    assert pid2 != pid
    assert get_json("x.localhost", port)["backend"] == "A"


def test_running_proxy_follows_the_table(proxy_daemon, backends, port):
    a, b = backends("A"), backends("B")
    set_fleet_routes("app", [port], [_route("x", a.url)])
    daemon.start()
    set_fleet_routes("app", [port], [_route("x", b.url)])
    wait_until(lambda: get_json("x.localhost", port)["backend"] == "B", what="reload")
    other = free_port()
    set_fleet_routes("other", [other], [_route("y", a.url)])
    state = daemon.ensure_running()  # waits until the new port listens
    assert {"bind": "127.0.0.1", "port": other} in state["listening"]
    assert get_json("y.localhost", other)["backend"] == "A"


def test_port_taken_is_an_actionable_error(proxy_daemon):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    busy = taken.getsockname()[1]
    try:
        set_fleet_routes("app", [busy], [])
        with pytest.raises(FleetError, match=rf"port {busy} on 127.0.0.1 is already in use by .*\(pid {os.getpid()}\)"):
            daemon.start()
    finally:
        taken.close()


def test_ensure_running_checks_only_the_ports_asked_for(proxy_daemon, backends, port):
    a = backends("A")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        set_fleet_routes("blocked", [taken.getsockname()[1]], [])
        set_fleet_routes("app", [port], [_route("x", a.url)])
        with pytest.raises(FleetError, match="already in use"):
            daemon.ensure_running()
        state = daemon.ensure_running(need=[Listen(port=port)])
        assert {"bind": "127.0.0.1", "port": port} in state["listening"]
        assert get_json("x.localhost", port)["backend"] == "A"
    finally:
        taken.close()


def test_cli_proxy_and_ca(proxy_daemon, backends, fleet_home):
    runner = CliRunner()
    a = backends("A")
    extra = free_port()
    res = runner.invoke(app, ["proxy", "start", "--port", str(extra)])
    assert res.exit_code == 0, res.output
    assert f"listening on 127.0.0.1:{extra}" in res.output
    set_fleet_routes("app", [extra], [_route("x", a.url)])
    wait_until(lambda: get_json("x.localhost", extra)["backend"] == "A", what="route")

    res = runner.invoke(app, ["proxy", "start"])
    assert res.exit_code == 0 and "already running" in res.output

    res = runner.invoke(app, ["proxy", "status", "--output", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    # the asked-for address, plus the bridge gateway for agents (URLs inside containers)
    from reconciler.routing.daemon import agent_address

    gateway = agent_address()
    assert data["running"] and data["listening"][0] == {"bind": "127.0.0.1", "port": extra}
    assert data["listening"][1:] == ([{"bind": gateway, "port": extra}] if gateway else [])
    assert data["routes"][0]["agent"] == "x" and data["routes"][0]["healthy"] is True

    res = runner.invoke(app, ["proxy", "status"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0 and "https://web.x.localhost:%d" % extra in res.output and " ok" in res.output

    res = runner.invoke(app, ["proxy", "run"])
    assert res.exit_code == 1 and "already running" in res.output

    res = runner.invoke(app, ["proxy", "stop"])
    assert res.exit_code == 0 and "stopped" in res.output
    res = runner.invoke(app, ["proxy", "stop"])
    assert res.exit_code == 0 and "not running" in res.output

    res = runner.invoke(app, ["ca", "path"])
    assert res.exit_code == 0 and res.output.strip() == str(fleet_home / "ca" / "ca.crt")
    res = runner.invoke(app, ["ca", "trust"])
    assert res.exit_code == 0 and str(fleet_home / "ca" / "ca.crt") in res.output
    assert "update-ca-certificates" in res.output or "security add-trusted-cert" in res.output


def test_cli_errors_are_one_line(proxy_daemon, fleet_home):
    (fleet_home / "routes.json").write_text("{broken")
    res = CliRunner().invoke(app, ["proxy", "start"])
    assert res.exit_code == 1
    assert "routes.json is not valid JSON" in res.output and "Traceback" not in res.output
