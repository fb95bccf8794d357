"""The two network paths remote agents need, checked on the real remote engine:

- grants, the reverse path: a container on the remote engine reaches a port of
  THIS machine through `ssh -R BRIDGE_IP:PORT:127.0.0.1:PORT` (sshd has
  `GatewayPorts clientspecified`, so the forward listens on the remote's docker0);
- routing: `ssh -L 127.0.0.1:P:<container ip>:3000` reaches a remote container's
  port that is not published at all, and `-L 127.0.0.1:P:127.0.0.1:HOSTPORT` one
  published only on the remote's loopback; neither is reachable from the network.
"""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.request
import uuid

import pytest

from tests.conftest import free_port, wait_for
from tests.remote.helpers import listening_in_netns, ssh_forward

pytestmark = pytest.mark.docker

LABEL = "dev.fleet.test"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = f"hello from this machine {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("network", ["bridge", "icc-off"])
def test_a_remote_container_reaches_this_machine_through_a_reverse_forward(remote_engine, base_image, network):
    """On the default bridge (docker0), and on a bridge network like fleet's shared
    `fleet_agents` (inter-container traffic off): the forward listens on that
    network's gateway, which its containers reach and the remote's network does not."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = remote_engine.docker()
    net = None
    try:
        if network == "bridge":
            gateway, run_on = remote_engine.bridge_ip, "bridge"
        else:
            net = client.networks.create("fleet-paths-" + uuid.uuid4().hex[:8], driver="bridge",
                                         options={"com.docker.network.bridge.enable_icc": "false"},
                                         labels={LABEL: "reverse"})
            net.reload()
            gateway, run_on = net.attrs["IPAM"]["Config"][0]["Gateway"], net.name
        with ssh_forward(remote_engine.name, "-R", f"{gateway}:{port}:127.0.0.1:{port}",
                         ready=lambda: listening_in_netns(remote_engine.netns, f"{gateway}:{port}")):
            # (-w: a final newline, without which the engine here drops the last partial line of output)
            out = client.containers.run(
                base_image, ["curl", "-sS", "--max-time", "10", "-w", "\\n", f"http://{gateway}:{port}/grant"],
                stderr=True, remove=True, labels={LABEL: "reverse"}, network=run_on,
            )
            assert out.decode().strip() == "hello from this machine /grant"
            # bound to the gateway only, not to the remote's outside address
            assert not listening_in_netns(remote_engine.netns, f"{remote_engine.remote_ip}:{port}")
            assert not listening_in_netns(remote_engine.netns, f"0.0.0.0:{port}")
    finally:
        server.shutdown()
        if net is not None:
            net.remove()
        client.close()


def test_a_remote_containers_port_is_reached_through_a_local_forward(remote_engine, base_image):
    client = remote_engine.docker()
    name = "fleet-paths-" + uuid.uuid4().hex[:8]
    container = client.containers.run(
        base_image, ["sh", "-c", "echo remote-web > /tmp/index.html && cd /tmp && exec python3 -m http.server 3000"],
        name=name, detach=True, labels={LABEL: "forward"}, ports={"3000/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["IPAddress"]
        host_port = int(container.attrs["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"])
        assert container.attrs["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostIp"] == "127.0.0.1"

        def get(port: int) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
                return r.read().decode().strip()

        for target in (f"{ip}:3000", f"127.0.0.1:{host_port}"):  # the container's address; the remote's loopback
            local = free_port()
            with ssh_forward(remote_engine.name, "-L", f"127.0.0.1:{local}:{target}"):
                assert wait_for(lambda: get(local), timeout=20, what=f"the forward to {target}") == "remote-web"
        # and not reachable from the network: the remote's published port is on its loopback only
        with pytest.raises(OSError):
            socket.create_connection((remote_engine.remote_ip, host_port), timeout=2).close()
    finally:
        container.remove(force=True)
        client.close()
