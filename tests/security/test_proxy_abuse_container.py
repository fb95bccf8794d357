"""The connection flood from inside a real container: it reaches the routing
proxy on the Docker bridge's gateway address (as agents do), holds silent
connections and trickles a request body; the proxy closes what is over the
cap and the stalled body, and keeps answering the host throughout."""

from __future__ import annotations

import json
import socket

import pytest

from reconciler.grants.forward import bridge_gateway
from reconciler.routing import daemon
from reconciler.routing.table import Route, add_listen, set_fleet_routes
from tests.routing.conftest import backends, port  # noqa: F401  (fixtures)
from tests.routing.helpers import free_port, get_json

FLOOD = r"""
import json, socket, time, sys
gw, port = sys.argv[1], int(sys.argv[2])
body = socket.create_connection((gw, port), 5)
body.sendall(b"POST / HTTP/1.1\r\nHost: x.localhost\r\nContent-Length: 1000000\r\n\r\n")
time.sleep(0.2)  # its head is in: it no longer counts as pending
conns = []
for _ in range(80):
    s = socket.create_connection((gw, port), 5)
    conns.append(s)
time.sleep(1.0)
closed = 0
for s in conns:
    s.settimeout(0.05)
    try:
        closed += s.recv(1) == b""
    except socket.timeout:
        pass
    except ConnectionResetError:
        closed += 1
answer = b""
body.settimeout(8)
deadline = time.time() + 8
while time.time() < deadline:
    try:
        body.send(b"z" * 8)  # slowhttptest -B
    except OSError:
        break
    try:
        body.settimeout(0.5)
        answer = body.recv(200)
        if answer:
            break
    except socket.timeout:
        pass
print(json.dumps({"opened": len(conns), "closed": closed, "body_answer": answer.decode("latin-1")[:40]}))
"""


@pytest.mark.docker
def test_container_flood_is_capped_and_the_host_is_still_served(fleet_home, monkeypatch, docker_client, base_image,
                                                               fleet_name, backends, port):
    gw = bridge_gateway()
    if gw is None:
        pytest.fail("no docker0 bridge: this test needs the Docker engine's default bridge")
    a = backends("A")
    gw_port = free_port()
    set_fleet_routes("app", [port], [Route(agent="x", service="web", container_port=3000, target=a.url)])
    add_listen(gw_port, gw)
    monkeypatch.setenv("FLEET_PROXY_MAX_PENDING_PER_SOURCE", "20")
    monkeypatch.setenv("FLEET_PROXY_BODY_TIMEOUT", "1")
    try:
        daemon.start()
        out = docker_client.containers.run(
            base_image, ["python3", "-c", FLOOD, gw, str(gw_port)], name=f"{fleet_name}-flood",
            labels={"dev.fleet.project": fleet_name}, remove=False, stdout=True, stderr=True,
        )
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert result["opened"] == 80
        assert result["closed"] >= 55, result  # 20 held, the rest closed at once
        assert result["body_answer"].startswith("HTTP/1.1 408"), (result, daemon.log_path().read_text()[-3000:])
        assert get_json("x.localhost", port)["backend"] == "A"
        with socket.create_connection((gw, gw_port), 5) as s:  # the bridge listener too
            s.sendall(b"GET / HTTP/1.1\r\nHost: x.localhost\r\nConnection: close\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        daemon.stop()
