"""Attacks on the grants forward proxy from inside real containers on the real
engine: every spelling of this machine's addresses (CONNECT and absolute
form), TRACE/TRACK through the interception, and a proxy credential replayed
from another container. Each fails on a proxy that does not defend."""

from __future__ import annotations

import json
import ssl
import socket

import pytest

from reconciler.grants import destinations

from .forward_world import PROBE, TOKEN, World

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def world(tmp_path_factory, docker_client, base_image):
    w = World(tmp_path_factory.mktemp("sec-forward"), docker_client, base_image)
    try:
        w.start()
        yield w
    finally:
        w.stop()


def _probe(world, target, port: int, spellings: list[str], proxy: str | None = None) -> dict:
    c = world.container(target) if isinstance(target, str) else target
    env = {"PROBE_PROXY": proxy} if proxy else None
    code, out = c.exec_run(["python3", "-c", PROBE, str(port), *spellings], environment=env)
    out = out.decode(errors="replace")
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def _this_machine(world) -> list[str]:
    """The spellings to try: the issue's list, the bridge gateway(s) and every
    address of this machine, plain and IPv4-mapped."""
    spellings = ["[::ffff:127.0.0.1]", "[::1]", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0.0.0.0", "[::]",
                 "169.254.169.254", "[::ffff:7f00:1]", "[::127.0.0.1]", "localhost", "127.0.0.1."]
    gateways = {world.gateway}
    for net in world.container("coder").attrs["NetworkSettings"]["Networks"].values():
        if net.get("Gateway"):
            gateways.add(net["Gateway"])
    for a in sorted(gateways | {str(x) for x in destinations.scan().addresses}):
        if ":" in a:
            spellings.append(f"[{a}]")
        else:
            spellings += [a, f"[::ffff:{a}]"]
    return spellings


def test_no_spelling_of_this_machine_gets_through(world):
    spellings = _this_machine(world)
    results = _probe(world, "coder", world.listener.port, spellings)
    for t, (connect, absolute) in results.items():
        assert connect.startswith("HTTP/1.1 403") and "does not connect to this machine" in connect, (t, connect)
        assert absolute.startswith("HTTP/1.1 403") and "does not connect to this machine" in absolute, (t, absolute)
    assert world.listener.hits == 0
    # curl's own spellings, CONNECT (-p) and absolute form, ignoring NO_PROXY
    for url in (f"http://[::ffff:127.0.0.1]:{world.listener.port}/", f"http://[::1]:{world.listener.port}/"):
        for p in ("-p", ""):
            code, out = world.sh("coder", f"curl -s --noproxy '' -x \"$HTTPS_PROXY\" {p} -o /dev/null -w '%{{http_code}} %{{http_connect}}' '{url}'")
            assert "403" in out.split(), (url, p, out)
    assert world.listener.hits == 0
    # the one way there stays open: a FLEET_RESOLVE entry
    code, out = world.sh("coder", "curl -s --noproxy '' -x \"$HTTPS_PROXY\" http://local.test/")
    assert out == "hit" and world.listener.hits == 1, out


def test_the_shared_host_agent_is_refused_too(world):
    results = _probe(world, "pair", world.listener.port, ["[::ffff:127.0.0.1]", "127.1", world.gateway])
    assert all(r.startswith("HTTP/1.1 403") for pair in results.values() for r in pair), results


def _upstream_echoes_trace(world) -> bool:
    """The fake upstream does reflect TRACE with its headers (so the test means something)."""
    ctx = ssl.create_default_context(cafile=world.up.ca_file)
    with socket.create_connection(("127.0.0.1", world.up.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="api.github.com") as s:
            s.sendall(b"TRACE /direct HTTP/1.1\r\nHost: api.github.com\r\nX-Probe: reflected\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    return b"reflected" in data


def test_trace_and_track_never_carry_the_token(world):
    assert _upstream_echoes_trace(world)
    before = len(world.up.requests)
    for method in ("TRACE", "TRACK", "trace"):
        code, out = world.sh("coder", f"curl -sS -X {method} -w '\\n%{{http_code}}' https://api.github.com/echo/trace")
        assert out.strip().endswith("405"), (method, out)
        assert TOKEN not in out and "refused" in out, out
    # absolute form, through the proxy without interception
    code, out = world.sh("coder", "curl -s --noproxy '' -x \"$HTTPS_PROXY\" -X TRACE -w '\\n%{http_code}' http://local.test/")
    assert out.strip().endswith("405"), out
    seen = world.up.requests[before:]
    assert not any(r["method"].upper() in ("TRACE", "TRACK") for r in seen), seen
    # and the interception still works for ordinary methods
    code, out = world.sh("coder", "curl -sS https://api.github.com/echo/after-trace")
    assert code == 0 and TOKEN in out, out
    log = (world.home / "network" / world.name / "coder.log").read_text()
    assert "TRACE/TRACK refused" in log and TOKEN not in log


def _status(world, target, cred: str, url: str, connect: bool) -> str:
    w = "%{http_connect}" if connect else "%{http_code}"
    code, out = world.sh(target, f"curl -s --noproxy '' --max-time 15 -o /dev/null -w '{w}' -x 'http://fleet:{cred}@fleet-proxy:{world.grants_port}' '{url}'")
    return out.strip()


def test_a_credential_replayed_from_another_container_gets_407(world):
    cred = world.credential("coder")
    before = len(world.up.requests)
    hand = world.hand_container()
    for target in ("plain", "pair", hand):  # an agent with no grants, a shared-host agent, a hand-made container
        assert _status(world, target, cred, "https://api.github.com/echo/stolen", connect=True) == "407", target
        assert _status(world, target, cred, "http://local.test/stolen", connect=False) == "407", target
    assert world.up.requests[before:] == [] and world.listener.hits <= 1  # (1: the FLEET_RESOLVE check above)
    # the owner keeps working, on the same proxy, right after
    code, out = world.sh("coder", "curl -sS https://api.github.com/echo/owner")
    assert code == 0 and TOKEN in out, out
    code, out = world.sh("pair", "curl -sS https://api.github.com/echo/pair")
    assert code == 0 and TOKEN in out, out
    assert "used from" in (world.home / "proxy.log").read_text()
