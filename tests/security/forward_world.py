"""A fleet on the real engine for the forward-proxy attacks: agents with and
without grants (one on a shared host), a fresh fleet proxy that sees
FLEET_RESOLVE (api.github.com -> a local TLS echo upstream, local.test -> a
listener on every address of this machine), and ways to run code in them."""

from __future__ import annotations

import socket
import textwrap
import threading
import uuid
from pathlib import Path

from reconciler.core import labels as L
from reconciler.grants.forward import bridge_gateway
from tests.conftest import cleanup_fleet, free_port, run_fleet
from tests.grants.helpers import Upstream

TOKEN = "ghp_SEC" + uuid.uuid4().hex


class Listener:
    """A TCP server on every address of this machine (dual stack), counting
    connections: anything the proxy lets through to this machine hits it."""

    def __init__(self):
        self.hits = 0
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.sock.bind(("::", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            try:
                c.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:  # read the request first: closing on unread data resets
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhit")
                c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            finally:
                c.close()

    def close(self):
        self.sock.close()


class World:
    def __init__(self, tmp: Path, client, image: str):
        self.client = client
        self.image = image
        self.home = tmp / "home"
        self.home.mkdir()
        self.up = Upstream(tmp / "upstream-ca", names=("api.github.com", "github.com"))
        self.listener = Listener()
        gateway = bridge_gateway()
        assert gateway, "no Docker bridge gateway on this machine"
        self.gateway = gateway
        with socket.socket() as s:
            s.bind((gateway, 0))
            self.grants_port = s.getsockname()[1]
        self.env = {
            "FLEET_HOME": str(self.home),
            "FLEET_KEYRING": "off",
            "FLEET_RESOLVE": f"api.github.com=127.0.0.1:{self.up.port},local.test=127.0.0.1:{self.listener.port}",
            "FLEET_UPSTREAM_CA": self.up.ca_file,
            "FLEET_GRANTS_PORT": str(self.grants_port),
        }
        self.name = "s" + uuid.uuid4().hex[:10]
        self.dir = tmp / "project"
        self.dir.mkdir()
        self.extra: list = []  # containers started by hand, removed at the end

    def fleet(self, *args: str, input: str | None = None):
        return run_fleet(*args, cwd=self.dir, env=self.env, input=input)

    def start(self) -> None:
        r = self.fleet("proxy", "start", "--port", str(free_port()))
        assert r.code == 0, r.text
        r = self.fleet("grant", "set", "github", input=TOKEN + "\n")
        assert r.code == 0, r.text
        (self.dir / "fleet.yaml").write_text(textwrap.dedent(f"""
            fleet: {self.name}
            defaults:
              image: {self.image}
              command: ["sleep", "infinity"]
            hosts:
              box: {{}}
            agents:
              coder:
                grants: [github]
              plain: {{}}
              pair:
                host: box
                grants: [github]
            """))
        r = self.fleet("apply")
        assert r.code == 0, r.text

    def stop(self) -> None:
        self.fleet("proxy", "stop")
        for c in self.extra:
            try:
                c.remove(force=True)
            except Exception:
                pass
        cleanup_fleet(self.client, self.name)
        self.up.stop()
        self.listener.close()

    def container(self, agent: str):
        found = self.client.containers.list(
            all=True, filters={"label": [f"{L.PROJECT}={self.name}", f"{L.AGENT}={agent}"]})
        assert len(found) == 1, found
        return found[0]

    def sh(self, target, cmd: str) -> tuple[int, str]:
        c = self.container(target) if isinstance(target, str) else target
        code, out = c.exec_run(["/bin/sh", "-c", cmd])
        return code, out.decode(errors="replace")

    def credential(self, agent: str) -> str:
        env = dict(e.split("=", 1) for e in self.container(agent).attrs["Config"]["Env"])
        return env["HTTPS_PROXY"].split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]

    def hand_container(self, network: str | None = None):
        """A plain container started by hand on the same engine (no fleet labels)."""
        c = self.client.containers.run(
            self.image, ["sleep", "infinity"], detach=True, name=f"secfwd-{uuid.uuid4().hex[:10]}",
            extra_hosts={"fleet-proxy": "host-gateway"}, network=network,
        )
        self.extra.append(c)
        return c


# Raw requests from inside a container, spelled exactly (curl would normalise
# `127.1` and friends before the proxy sees them).
PROBE = r'''
import base64, json, os, socket, sys
url = os.environ.get("PROBE_PROXY") or os.environ["HTTPS_PROXY"]
userinfo, hostport = url.split("//", 1)[1].rsplit("@", 1)
host, port = hostport.rsplit(":", 1)
auth = base64.b64encode(userinfo.encode()).decode()
tport = int(sys.argv[1])
out = {}
for t in sys.argv[2:]:
    res = []
    for req in (f"CONNECT {t}:{tport} HTTP/1.1\r\nHost: {t}:{tport}\r\n",
                f"GET http://{t}:{tport}/ HTTP/1.1\r\nHost: {t}\r\n"):
        s = socket.create_connection((host, int(port)), timeout=15)
        s.sendall((req + f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode())
        data = b""
        s.settimeout(5)
        try:
            while b"fleet-proxy" not in data and b"hit" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        s.close()
        res.append(data.decode(errors="replace"))
    out[t] = res
print(json.dumps(out))
'''
