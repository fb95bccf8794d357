"""Raw sockets: fleet's containers run without CAP_NET_RAW and with
no-new-privileges, so no agent sniffs or spoofs a neighbour's traffic; a
capability comes back only when fleet.yaml asks, and the plan says so.

Attacks run from inside real agent containers of a real fleet."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.conftest import run_fleet

from .helpers import CHATTER, gateway, py, write

pytestmark = pytest.mark.docker

RAW = "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print('raw socket opened')"

SNIFF = r'''
import socket, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.settimeout(0.2)
hits = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        if b"Proxy-Authorization: Basic" in s.recv(65535):
            hits += 1
    except socket.timeout:
        pass
print("sniffed", hits)
'''


def fleet_file(tmp_path, fleet, image, sniffer_caps=""):
    return write(tmp_path, f"""\
        fleet: {fleet}
        hosts:
          box:
            image: {image}
        agents:
          solo:
            image: {image}
            command: ["sleep", "infinity"]
          victim:
            host: box
            command: ["sleep", "infinity"]
          sniffer:
            host: box
            command: ["sleep", "infinity"]
            {sniffer_caps}
        """)


def test_no_raw_socket_and_no_new_privileges_unless_asked(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "capabilities: [NET_RAW]")
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    # the plan names the capability given back, on the agent that gets it
    sniffer_line = next(line for line in r.out.splitlines() if "agent sniffer" in line)
    assert "with capability NET_RAW" in sniffer_line, r.out
    assert "capabilit" not in next(line for line in r.out.splitlines() if "agent victim" in line)
    for name in ("solo", "victim"):  # a private agent and one on a shared host
        c = docker_client.containers.get(f"fleet_{fleet_name}_{name}")
        code, out = py(c, RAW)
        assert code != 0 and "Operation not permitted" in out, (name, out)
        code, out = c.exec_run(["grep", "NoNewPrivs", "/proc/self/status"])
        assert out.split() == [b"NoNewPrivs:", b"1"], (name, out)
    holder = docker_client.containers.get(f"fleet_{fleet_name}_host_box")
    assert holder.attrs["HostConfig"]["CapDrop"] == ["NET_RAW"]
    assert holder.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges"]
    # asked for: per container, even in the holder's shared network namespace
    sniffer = docker_client.containers.get(f"fleet_{fleet_name}_sniffer")
    code, out = py(sniffer, RAW)
    assert code == 0 and "raw socket opened" in out, out
    # dropping the key shows in the plan as a change and takes the capability away
    path = fleet_file(tmp_path, fleet_name, base_image)
    r = run_fleet("diff", str(path))
    assert "agent sniffer" in r.out and 'capabilities: ["NET_RAW"] -> null' in r.out, r.out
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    code, out = py(docker_client.containers.get(f"fleet_{fleet_name}_sniffer"), RAW)
    assert code != 0 and "Operation not permitted" in out, out


class _Sink:
    """A TCP server on docker0's gateway (where fleet-proxy points) that reads and drops."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((gateway(), 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            c.settimeout(1)
            try:
                c.recv(4096)
            except OSError:
                pass
            c.close()

    def close(self):
        self.stop = True
        self.sock.close()


def _sniff_neighbour(docker_client, fleet) -> tuple[int, str]:
    sink = _Sink()
    try:
        victim = docker_client.containers.get(f"fleet_{fleet}_victim")
        sniffer = docker_client.containers.get(f"fleet_{fleet}_sniffer")
        victim.exec_run(["python3", "-c", CHATTER, gateway(), str(sink.port), "4"], detach=True)
        code, out = sniffer.exec_run(["timeout", "10", "python3", "-c", SNIFF, "3"])
        return code, out.decode(errors="replace")
    finally:
        sink.close()


@pytest.mark.slow
def test_neighbour_on_a_shared_host_cannot_sniff_the_proxy_credential(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image)
    assert run_fleet("apply", "--yes", str(path)).code == 0
    code, out = _sniff_neighbour(docker_client, fleet_name)
    assert code != 0 and "Operation not permitted" in out and "sniffed" not in out, out
    # the same attack works once fleet.yaml gives the sniffer NET_RAW (so the test
    # proves the attack, and that the capability is what stops it)
    path = fleet_file(tmp_path, fleet_name, base_image, "capabilities: [NET_RAW]")
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and 'capabilities: null -> ["NET_RAW"]' in r.out, r.text
    code, out = _sniff_neighbour(docker_client, fleet_name)
    assert code == 0 and int(out.split()[-1]) > 0, out
