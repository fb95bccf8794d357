"""A bridge made a moment ago is this machine too: the forward proxy's cached
scan of local addresses (2 s) must not let an agent reach a gateway created
since (seen when another fleet's network appeared during a probe)."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from reconciler.grants import destinations
from reconciler.grants.forward_config import ForwardConfig
from reconciler.grants.forward_upstream import Refused, Upstreams


@pytest.fixture
def new_bridge():
    if os.geteuid() != 0:
        pytest.fail("needs root to add a bridge (the suite runs as root)")
    name = f"flnb{os.getpid() % 100000}"
    subprocess.run(["ip", "link", "del", name], capture_output=True)
    yield name
    subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_a_gateway_made_after_the_last_scan_is_refused(new_bridge):
    addr = f"10.{(os.getpid() >> 8) % 200 + 20}.{os.getpid() % 250}.1"
    destinations.local_addresses(max_age=3600)  # a warm cache from before the bridge
    subprocess.run(["ip", "link", "add", "name", new_bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{addr}/30", "dev", new_bridge], check=True)
    subprocess.run(["ip", "link", "set", new_bridge, "up"], check=True)
    assert destinations.refusal(addr, destinations.local_addresses(max_age=3600)) is None  # the stale view
    with pytest.raises(Refused, match="does not connect to this machine"):
        asyncio.run(Upstreams(ForwardConfig()).addresses(addr, 443))
