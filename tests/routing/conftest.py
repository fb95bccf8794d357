"""Fixtures for the routing tests: backends, a proxy in a thread, the CA."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from reconciler.net.ca import CertificateAuthority, routing_ca
from reconciler.routing.proxy import ProxyConfig

from .helpers import Backend, ProxyThread, client_ssl, free_port


@pytest.fixture
def ca(fleet_home) -> CertificateAuthority:
    return routing_ca().ensure()


@pytest.fixture
def tls(ca):
    """A client SSL context trusting the routing CA (and only it)."""
    return client_ssl(ca)


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    made: list[Backend] = []

    def make(name: str, port: int = 0, **kw) -> Backend:
        b = Backend(name, port, **kw)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def start_proxy(ca) -> Iterator[Callable[..., ProxyThread]]:
    made: list[ProxyThread] = []

    def start(**overrides) -> ProxyThread:
        cfg = ProxyConfig(reload_interval=0.05, default_listen=None)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        p = ProxyThread(cfg, ca).start()
        made.append(p)
        return p

    yield start
    for p in made:
        p.stop()


@pytest.fixture
def port() -> int:
    return free_port()
