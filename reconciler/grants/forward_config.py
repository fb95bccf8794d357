"""The grants forward proxy's settings: where it listens, how names resolve,
which CA upstreams are checked against, its timeouts; and where its state is
kept under FLEET_HOME (`grants/forward.json`, `grants/port`)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.errors import FleetError
from reconciler.net.envconfig import env_port, env_text
from reconciler.state.home import fleet_home

DEFAULT_PORT = 3128


def state_path() -> Path:
    return fleet_home() / "grants" / "forward.json"


def port_path() -> Path:
    return fleet_home() / "grants" / "port"


def read_state() -> dict | None:
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, ValueError):
        return None


def parse_resolve(text: str | None) -> dict[str, tuple[str, int | None]]:
    """`api.github.com=127.0.0.1:8443,github.com=[::1]` -> {host: (address, port|None)}."""
    out: dict[str, tuple[str, int | None]] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, addr = item.partition("=")
        host = host.strip().lower().rstrip(".")
        addr = addr.strip()
        if not sep or not host or not addr:
            raise FleetError(f"FLEET_RESOLVE: expected host=address[:port] (found {item!r})")
        port: int | None = None
        if addr.startswith("["):
            inner, _, rest = addr[1:].partition("]")
            addr = inner
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif addr.count(":") == 1:
            addr, _, p = addr.partition(":")
            if not p.isdigit():
                raise FleetError(f"FLEET_RESOLVE: bad port in {item!r}")
            port = int(p)
        out[host] = (addr, port)
    return out


def bridge_gateway() -> str | None:
    """The Docker bridge gateway: docker0's IPv4 address, else what the engine
    says (`docker network inspect bridge`, IPAM gateway)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", b"docker0"))  # SIOCGIFADDR
            return socket.inet_ntoa(res[20:24])
    except OSError:
        pass
    try:
        import docker

        client = docker.from_env(timeout=5)
        for cfg in client.api.inspect_network("bridge").get("IPAM", {}).get("Config") or []:
            if cfg.get("Gateway"):
                return str(cfg["Gateway"])
    except Exception:
        pass
    return None


@dataclass
class ForwardConfig:
    bind: str | None = None  # None: the Docker bridge gateway
    port: int | None = None  # None: recorded, else DEFAULT_PORT
    resolve: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    upstream_ca: str | None = None
    header_timeout: float = 30.0
    idle_timeout: float = 75.0
    connect_timeout: float = 10.0
    poll_interval: float = 0.3
    listen_retry: float = 2.0
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> "ForwardConfig":
        env = os.environ
        return cls(
            bind=env_text(env, "FLEET_GRANTS_BIND"),
            port=env_port(env, "FLEET_GRANTS_PORT"),
            resolve=parse_resolve(env.get("FLEET_RESOLVE")),
            upstream_ca=env_text(env, "FLEET_UPSTREAM_CA"),
        )
