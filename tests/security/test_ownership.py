"""Ownership that labels alone cannot fake, and the upgrade from the old names.

A `docker commit` of an agent, run under another name, carries fleet's labels:
fleet reports it and never adopts, replaces or destroys it. Containers and the
workspace volume an older fleet made (names joined with '-') are recognised by
their old name and labels and converge on the next apply, keeping the work."""

from __future__ import annotations

import json

import pytest

from reconciler.core import labels as L
from reconciler.load.loader import load
from reconciler.providers.docker.driver import HOLDER_COMMAND
from tests.conftest import run_fleet

from .helpers import write

pytestmark = pytest.mark.docker


def test_a_docker_commit_copy_is_reported_and_never_acted_on(tmp_path, docker_client, base_image, fleet_name):
    path = write(tmp_path, f"""\
        fleet: {fleet_name}
        agents:
          web:
            image: {base_image}
            command: ["sleep", "infinity"]
        """)
    assert run_fleet("apply", "--yes", str(path)).code == 0
    real = docker_client.containers.get(f"fleet_{fleet_name}_web")
    image = real.commit(repository=f"{fleet_name}-copy", tag="1")
    copy = docker_client.containers.run(image.id, ["sleep", "infinity"], name=f"{fleet_name}-something-else", detach=True)
    try:
        assert copy.labels["dev.fleet.project"] == fleet_name and copy.labels["dev.fleet.agent"] == "web"
        warning = (f"warning: container {fleet_name}-something-else ({copy.id[:12]}) carries fleet {fleet_name}'s "
                   f"labels but is not one fleet created (fleet names it fleet_{fleet_name}_web); ignored")
        r = run_fleet("diff", str(path))
        assert warning in r.out and f"fleet {fleet_name} is up to date" in r.out, r.text
        r = run_fleet("apply", "--yes", str(path))
        assert r.code == 0 and warning in r.out and "up to date" in r.out, r.text
        real.reload()
        copy.reload()
        assert real.status == "running" and copy.status == "running"
        assert docker_client.containers.get(f"fleet_{fleet_name}_web").id == real.id
        r = run_fleet("destroy", "--yes", str(path))
        assert r.code == 0 and warning in r.out, r.text
        copy.reload()
        assert copy.status == "running"  # left alone
        assert not docker_client.containers.list(all=True, filters={"id": real.id})
    finally:
        copy.remove(force=True)
        docker_client.images.remove(image.id, force=True)


def _old_layout(client, desired, image: str) -> dict[str, object]:
    """What fleet created before names were joined with '_' (labels as it set
    them then: no naming label, volume labelled with fleet and host only)."""
    fleet = desired.fleet
    host = desired.hosts["box"]
    vol = client.volumes.create(f"fleet-{fleet}-box-workspace", labels={L.PROJECT: fleet, L.HOST: "box"})
    holder = client.containers.run(
        image, HOLDER_COMMAND, name=f"fleet-{fleet}-host-box", detach=True, init=True,
        labels={L.PROJECT: fleet, L.KIND: "host", L.HOST: "box", L.SPEC_HASH: host.spec_hash,
                L.SPEC: json.dumps(host.spec(), sort_keys=True, separators=(",", ":"))},
        volumes={vol.name: {"bind": "/workspace", "mode": "rw"}}, working_dir="/workspace", hostname="box",
        restart_policy={"Name": "always"}, extra_hosts={"fleet-proxy": "host-gateway"},
    )
    out = {"holder": holder, "volume": vol}
    for name in ("w", "p"):
        a = desired.agents[name]
        lab = {L.PROJECT: fleet, L.KIND: "agent", L.AGENT: name, L.SPEC_HASH: a.spec_hash,
               L.SPEC: json.dumps(a.spec(), sort_keys=True, separators=(",", ":")), L.PORTS: "{}", L.MESSAGE: "none"}
        kw: dict = {}
        if a.host:
            lab[L.HOST] = a.host
            kw = dict(network_mode=f"container:{holder.id}", volumes_from=[holder.id])
        out[name] = client.containers.run(
            image, list(a.command), name=f"fleet-{fleet}-{name}", detach=True, labels=lab, environment=a.env,
            tty=True, stdin_open=True, init=True, restart_policy={"Name": "always"}, **kw,
        )
    return out


def test_a_fleet_made_by_the_previous_version_converges_and_keeps_its_workspace(tmp_path, docker_client, base_image, fleet_name):
    path = write(tmp_path, f"""\
        fleet: {fleet_name}
        hosts:
          box:
            image: {base_image}
        agents:
          w:
            host: box
            command: ["sleep", "infinity"]
          p:
            image: {base_image}
            command: ["sleep", "infinity"]
        """)
    old = _old_layout(docker_client, load(path), base_image)
    try:
        assert old["w"].exec_run(["sh", "-c", "echo work > /workspace/kept"]).exit_code == 0
        r = run_fleet("apply", "--yes", str(path))
        assert r.code == 0, r.text
        for name in (f"fleet-{fleet_name}-host-box", f"fleet-{fleet_name}-w", f"fleet-{fleet_name}-p"):
            assert f"named {name} by an older fleet version; re-created under its unambiguous name" in r.out, r.out
            assert not docker_client.containers.list(all=True, filters={"name": f"^/{name}$"})
        w = docker_client.containers.get(f"fleet_{fleet_name}_w")
        assert w.exec_run(["cat", "/workspace/kept"]).output == b"work\n"  # the old volume, adopted
        holder = docker_client.containers.get(f"fleet_{fleet_name}_host_box")
        assert [m["Name"] for m in holder.attrs["Mounts"] if m["Destination"] == "/workspace"] == [old["volume"].name]
        for c in (holder, docker_client.containers.get(f"fleet_{fleet_name}_p")):
            assert c.attrs["HostConfig"]["CapDrop"] == ["NET_RAW"]
            assert list(c.attrs["NetworkSettings"]["Networks"]) == ["fleet_agents"]
        r = run_fleet("apply", "--yes", str(path))
        assert "up to date" in r.out and "warning" not in r.out, r.text
    finally:
        for c in list(old.values())[::-1]:
            try:
                c.remove(force=True) if hasattr(c, "exec_run") else None
            except Exception:
                pass
        run_fleet("destroy", "--yes", str(path))
        try:
            old["volume"].remove(force=True)
        except Exception:
            pass
