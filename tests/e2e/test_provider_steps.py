"""The Docker provider's single-purpose steps, against the real engine: what the
plan's actions will call one by one (create_agent with the engine's extras,
remove_agent, ensure_network, the volumes capability), and the capabilities it
declares. Each step does one thing to one resource and can be repeated."""

from __future__ import annotations

import textwrap

import pytest

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.model import ImageRef
from reconciler.load.loader import load
from reconciler.providers import base
from reconciler.providers.base import AgentExtras
from reconciler.providers.docker import security as sec
from reconciler.providers.docker.driver import DockerProvider
from reconciler.providers.modal.driver import ModalProvider

pytestmark = pytest.mark.docker


def test_capabilities_are_declared_and_checked():
    docker, modal = DockerProvider(), ModalProvider()
    assert docker.capabilities == {"images", "network", "volumes", "events", "archive", "inventory"}
    assert modal.capabilities == {"archive", "snapshots"}
    assert base.images_of(docker) is docker and base.images_of(modal) is None
    assert base.volumes_of(docker) is docker and base.volumes_of(modal) is None
    assert base.events_of(docker) is docker and base.events_of(modal) is None
    assert base.snapshots_of(modal) is modal and base.snapshots_of(docker) is None
    assert base.archive_of(docker) is docker and base.archive_of(modal) is modal
    assert isinstance(docker, base.Provider) and isinstance(modal, base.Provider)
    with pytest.raises(ValueError):
        base.has(docker, "teleport")


def test_ensure_network_is_idempotent(docker_client):
    p = DockerProvider()
    first = p.ensure_network()
    assert p.ensure_network() == first
    net = docker_client.api.inspect_network(first)
    assert net["Name"] == L.NETWORK and net["Labels"][L.NETWORK_LABEL] == "agents"


def test_build_image_refuses_an_image_without_build(docker_client):
    with pytest.raises(ProviderError, match="no build: context"):
        DockerProvider().build_image("x", ImageRef(ref="fleet_nothing_build:0123456789abcdef"), "agent a")


def test_create_agent_takes_extras_and_remove_agent_repeats(fleet_name, base_image, tmp_path, docker_client):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet_name}
        agents:
          a:
            image: {base_image}
            command: sleep 300
            env: {{MINE: "1"}}
    """))
    desired = load(path)
    p = DockerProvider()
    created: list[str] = []
    made = p.create_agent(desired, desired.agents["a"], AgentExtras(env={"FLEET_EXTRA": "yes"}, on_created=created.append))
    assert made is not None and made.id and made.state == "running"  # what it made, for the execution state
    cid = made.id
    assert created == [cid]  # the hook ran with the new container's id, before it started
    info = docker_client.api.inspect_container(cid)
    assert info["State"]["Running"]
    assert {"MINE=1", "FLEET_EXTRA=yes"} <= set(info["Config"]["Env"])
    assert not info["HostConfig"]["Binds"]  # extras given: nothing else added (no hosts file, no grant bundle)
    _, agents = p.observe(fleet_name)
    [obs] = agents
    assert obs.id == cid and obs.name == "a"
    p.remove_agent(fleet_name, obs)
    assert docker_client.containers.list(all=True, filters={"id": cid}) == []
    p.remove_agent(fleet_name, obs)  # gone already: fine


def test_volumes_capability(fleet_name, docker_client):
    p = DockerProvider()
    assert p.observe_volumes(fleet_name) == ()
    mine = sec.workspace_volume(p.api, fleet_name, "h")
    # fleet's name without fleet's labels: not the fleet's, never listed or removed
    stranger = docker_client.volumes.create(name=L.workspace_volume(fleet_name, "x"))
    try:
        assert p.observe_volumes(fleet_name) == (mine,)
        with pytest.raises(ProviderError, match="not a workspace volume"):
            p.remove_volume(fleet_name, stranger.name)
        assert p.remove_volume(fleet_name, mine) is True
        assert p.remove_volume(fleet_name, mine) is False  # gone already
        sec.workspace_volume(p.api, fleet_name, "h")
        assert p.observe_volumes(fleet_name) == (mine,)  # what `fleet destroy --purge-workspaces` plans from
        assert p.remove_volume(fleet_name, mine) is True  # one purge action
        assert p.observe_volumes(fleet_name) == ()
        docker_client.volumes.get(stranger.name)  # still there
    finally:
        stranger.remove(force=True)
