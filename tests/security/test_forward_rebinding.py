"""A proxy credential follows its container, not an address: the agent moves to
another Docker network, restarts and gets a new address, and keeps working,
while a container that takes over its old address with the stolen credential
gets 407 (slow: restarts and a network of its own)."""

from __future__ import annotations

import random
import uuid

import pytest

from tests.conftest import wait_for

from .forward_world import TOKEN, World

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory, docker_client, base_image):
    w = World(tmp_path_factory.mktemp("sec-forward-rebind"), docker_client, base_image)
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture
def network(docker_client):
    """A user-defined bridge without inter-container traffic, with a subnet of
    its own (so an address can be asked for)."""
    import docker

    net = None
    for _ in range(10):
        sub = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        try:
            net = docker_client.networks.create(
                f"secfwd-{uuid.uuid4().hex[:8]}", driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false"},  # like fleet's agent network
                ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=f"{sub}.0/24", gateway=f"{sub}.1")]),
            )
            break
        except docker.errors.APIError:
            continue
    assert net is not None, "no free subnet for a test network"
    yield net, sub
    net.reload()
    for c in net.containers:
        try:
            net.disconnect(c, force=True)
        except Exception:
            pass
    net.remove()


def _owner_works(world) -> bool:
    code, out = world.sh("coder", "curl -sS --max-time 10 https://api.github.com/echo/owner")
    return code == 0 and TOKEN in out


def _replay(world, target, cred: str) -> str:
    code, out = world.sh(target, f"curl -s --noproxy '' --max-time 10 -o /dev/null -w '%{{http_connect}}' "
                                 f"-x 'http://fleet:{cred}@fleet-proxy:{world.grants_port}' https://api.github.com/echo/stolen")
    return out.strip()


def test_the_credential_follows_its_container_across_networks_and_restarts(world, network, docker_client):
    net, sub = network
    coder = world.container("coder")
    cred = world.credential("coder")
    assert _owner_works(world)
    # move the agent off the default bridge onto another network: a new address, still its own
    net.connect(coder)
    docker_client.networks.get("bridge").disconnect(coder)
    coder.reload()
    first = coder.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert first.startswith(sub + ".")
    assert wait_for(lambda: _owner_works(world), timeout=15, what="the agent working from its new network")
    # it restarts; meanwhile a hand-made container takes the address it had
    coder.stop(timeout=1)
    thief = world.hand_container(network=net.name)
    net.disconnect(thief)
    net.connect(thief, ipv4_address=first)
    thief.reload()
    assert thief.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"] == first
    coder.start()
    coder.reload()
    now = coder.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
    assert now != first  # the agent's address changed under the proxy
    assert _replay(world, thief, cred) == "407"  # the old address is not the credential
    assert wait_for(lambda: _owner_works(world), timeout=15, what="the agent working from its new address")
    assert _replay(world, thief, cred) == "407"
    assert world.up.requests and all(r["path"] != "/echo/stolen" for r in world.up.requests)
