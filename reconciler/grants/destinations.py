"""Which addresses the forward proxy never connects to: this machine, in any spelling.

An agent reaches the forward proxy on the Docker bridge gateway, and through it
anything the proxy can reach. The proxy runs on this machine, so without a
filter an agent could reach services bound to this machine's loopback (other
agents' published ports, the routing proxy, a developer's database), its other
addresses, the metadata service at 169.254.169.254, and other containers on
the engine's bridges (bypassing a network that keeps agents apart).

The check runs on the address the proxy is about to connect to, after the one
name resolution whose result it then uses (never on the name, so DNS rebinding
cannot slip between check and connect). Textual spellings (`127.1`,
`2130706433`, `0x7f000001`, `0177.0.0.1`) are already numbers by then:
`getaddrinfo` parses them the way `inet_aton` does. IPv6 forms that embed an
IPv4 address (`::ffff:127.0.0.1`, `::127.0.0.1`, `::ffff:0:127.0.0.1`,
`64:ff9b::127.0.0.1`, 6to4) are judged by the IPv4 address they embed, since
Python's `ipaddress` does not (`ip_address('::ffff:127.0.0.1').is_loopback` is
False on 3.11).

Refused: loopback, unspecified (0.0.0.0/8, ::), link-local (169.254/16,
fe80::/10), multicast, broadcast and reserved addresses; every address
assigned to an interface of this machine; every subnet routed on a bridge
interface of this machine (docker0, br-*, any Linux bridge): the Docker
bridge gateways and the containers behind them.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_ZERO = ipaddress.ip_network("0.0.0.0/8")
_V4_LOOP = ipaddress.ip_network("127.0.0.0/8")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 prefix (RFC 8215)


@dataclass(frozen=True)
class Local:
    """This machine's own addresses and the subnets behind its bridges."""

    addresses: frozenset = field(default_factory=frozenset)
    networks: tuple = ()

    def owns(self, ip: IPAddress) -> str | None:
        if ip in self.addresses:
            return "an address of this machine"
        for net in self.networks:
            if ip.version == net.version and ip in net:
                return f"a Docker bridge network of this machine ({net})"
        return None


def parse_ip(text: str) -> IPAddress | None:
    """An address from a sockaddr or literal (`[...]`, `%zone` dropped); None
    for anything that is not one numeric address in canonical form."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it embeds one."""
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return ip.ipv4_mapped
    n = int(ip)
    if n >> 32 == 0 and n > 1:  # ::a.b.c.d (IPv4-compatible, deprecated); not :: or ::1
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip in _SIIT or ip in _NAT64:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip in _NAT64_LOCAL:
        return ipaddress.IPv4Address(n & 0xFFFFFFFF)
    if ip.sixtofour is not None:  # 2002:AABB:CCDD::/48
        return ip.sixtofour
    return None


def _special(ip: IPAddress) -> str | None:
    if ip.version == 4:
        if ip in _V4_LOOP:
            return "loopback"
        if ip in _V4_ZERO:
            return "unspecified (this host)"
    if ip.is_loopback:
        return "loopback"
    if ip.is_unspecified:
        return "unspecified (this host)"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 4 and (ip.is_reserved or ip == ipaddress.IPv4Address("255.255.255.255")):
        return "reserved or broadcast"
    if ip.version == 6 and ip in ipaddress.ip_network("fec0::/10"):
        return "site-local"
    return None


def refusal(ip: IPAddress | str, local: Local | None = None) -> str | None:
    """Why the proxy must not connect to `ip` (a short reason), or None."""
    if isinstance(ip, str):
        parsed = parse_ip(ip)
        if parsed is None:
            return "not a numeric address"
        ip = parsed
    local = local if local is not None else local_addresses()
    candidates: list[IPAddress] = [ip]
    if ip.version == 6:
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            candidates.append(v4)
    for c in candidates:
        why = _special(c) or local.owns(c)
        if why:
            return why if c is ip else f"{why}, embedded in {ip}"
    return None


# -- this machine's addresses ----------------------------------------------------------------

_PROC = Path("/proc/net")
_SYS = Path("/sys/class/net")


def _fib_local_v4(text: str) -> tuple[set, list]:
    """LOCAL entries of /proc/net/fib_trie: (addresses, networks)."""
    addrs: set = set()
    nets: list = []
    leaf: str | None = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|--"):
            leaf = s[3:].strip()
        elif s.startswith("/") and leaf is not None:
            parts = s.split()
            if len(parts) >= 3 and parts[2] == "LOCAL":
                plen = int(parts[0][1:])
                if plen == 32:
                    addrs.add(ipaddress.IPv4Address(leaf))
                else:
                    nets.append(ipaddress.IPv4Network(f"{leaf}/{plen}", strict=False))
    return addrs, nets


def _if_inet6(text: str) -> set:
    out = set()
    for line in text.splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            out.add(ipaddress.IPv6Address(int(parts[0], 16)))
    return out


def _bridges() -> set[str]:
    try:
        return {p.name for p in _SYS.iterdir() if (p / "bridge").exists()}
    except OSError:
        return set()


def _bridge_routes_v4(text: str, bridges: set[str]) -> list:
    nets = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8 or parts[0] not in bridges:
            continue
        dest = socket.inet_ntoa(struct.pack("<I", int(parts[1], 16)))
        mask = socket.inet_ntoa(struct.pack("<I", int(parts[7], 16)))
        net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        if net.prefixlen:  # never a default route
            nets.append(net)
    return nets


def _bridge_routes_v6(text: str, bridges: set[str]) -> list:
    nets = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or parts[9] not in bridges:
            continue
        plen = int(parts[1], 16)
        if plen == 0 or plen == 128:
            continue
        net = ipaddress.IPv6Network((int(parts[0], 16), plen), strict=False)
        if not net.is_link_local and not net.is_multicast:
            nets.append(net)
    return nets


def _ioctl_v4() -> set:
    """Fallback without /proc/net/fib_trie: each interface's primary IPv4 address."""
    out = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
                out.add(ipaddress.IPv4Address(res[20:24]))
            except OSError:
                continue
    return out


def _read(name: str) -> str:
    try:
        return (_PROC / name).read_text()
    except OSError:
        return ""


def scan() -> Local:
    """This machine's addresses and bridge subnets, read from the kernel now."""
    addrs: set = set()
    nets: list = []
    fib = _read("fib_trie")
    if fib:
        a, n = _fib_local_v4(fib)
        addrs |= a
        nets += n
    else:
        try:
            addrs |= _ioctl_v4()
        except OSError:
            pass
    addrs |= _if_inet6(_read("if_inet6"))
    bridges = _bridges()
    nets += _bridge_routes_v4(_read("route"), bridges)
    nets += _bridge_routes_v6(_read("ipv6_route"), bridges)
    extra = os.environ.get("FLEET_GRANTS_BIND")
    if extra and parse_ip(extra) is not None:
        addrs.add(parse_ip(extra))
    return Local(frozenset(addrs), tuple(dict.fromkeys(nets)))


_cache: tuple[float, Local] | None = None
_lock = threading.Lock()
TTL = 2.0  # a bridge created a moment ago (a new Docker network) is known within this


def local_addresses(max_age: float = TTL) -> Local:
    """`scan()`, at most `max_age` seconds old."""
    global _cache
    now = time.monotonic()
    with _lock:
        if _cache is not None and now - _cache[0] < max_age:
            return _cache[1]
    found = scan()
    with _lock:
        _cache = (time.monotonic(), found)
    return found
