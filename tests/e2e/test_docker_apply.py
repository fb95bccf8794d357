"""End to end on the real Docker engine: apply, no-op, replace, prune, shared
hosts, ownership, bad input, crash recovery and concurrent applies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, run_fleet, wait_for

pytestmark = pytest.mark.docker


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def containers(client, fleet: str) -> dict[str, object]:
    """name label -> container, for agents (`agent:x`) and hosts (`host:y`)."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        lab = c.labels
        key = f"{lab['dev.fleet.kind']}:{lab.get('dev.fleet.agent') or lab.get('dev.fleet.host')}"
        assert key not in out, f"duplicate container for {key}"
        out[key] = c
    return out


def exec_out(container, cmd: str) -> str:
    code, out = container.exec_run(["/bin/sh", "-c", cmd])
    assert code == 0, out
    return out.decode()


def two_agents(name: str, image: str, tz: str = "UTC", proxy_port: int | None = None) -> str:
    return f"""
        fleet: {name}
        proxy: {{port: {proxy_port or free_port()}}}
        defaults:
          image: {image}
          env: {{TZ: {tz}}}
        agents:
          web:
            command: "python3 -m http.server 3000"
            ports: {{web: 3000}}
          worker:
            command: ["sleep", "infinity"]
        """


def test_apply_creates_then_noop_then_replaces_only_the_changed_agent(tmp_path, docker_client, base_image, fleet_name):
    proxy_port = free_port()
    path = write(tmp_path, two_agents(fleet_name, base_image, proxy_port=proxy_port))
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert "create" in r.out and "agent web" in r.out
    first = containers(docker_client, fleet_name)
    assert set(first) == {"agent:web", "agent:worker"}
    for c in first.values():
        assert c.status == "running"
        assert c.labels["dev.fleet.spec-hash"]
    web = first["agent:web"]
    env = dict(e.split("=", 1) for e in web.attrs["Config"]["Env"])
    assert env["FLEET_NAME"] == fleet_name and env["FLEET_AGENT"] == "web" and env["FLEET_HOST"] == "web"
    assert env["FLEET_URL_WEB"] == f"https://web.web.localhost:{proxy_port}"
    binding = web.attrs["HostConfig"]["PortBindings"]["3000/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    assert web.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"

    # the published port answers (random host port on 127.0.0.1 only)
    web.reload()
    host_port = web.attrs["NetworkSettings"]["Ports"]["3000/tcp"][0]["HostPort"]
    wait_for(lambda: _http_ok(int(host_port)), what="web agent's server")

    # second apply: nothing to do, nothing recreated
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert f"fleet {fleet_name} is up to date" in r.out
    again = containers(docker_client, fleet_name)
    assert {k: c.id for k, c in again.items()} == {k: c.id for k, c in first.items()}

    # status lists both, with ports
    r = run_fleet("status", str(path), "--output", "json")
    assert r.code == 0, r.text
    data = json.loads(r.out)
    assert data["format_version"] == 2 and data["kind"] == "fleet-status" and data["fleet"] == fleet_name
    rows = {row["agent"]: row for row in data["agents"]}
    assert rows["web"]["state"] == "running"
    assert rows["web"]["ports"] == [{"service": "web", "container_port": 3000, "host_port": int(host_port), "address": None}]

    # an env edit replaces exactly the agent whose env changed
    text = path.read_text().replace("worker:\n    command", "worker:\n    env: {TZ: Europe/Paris}\n    command")
    path.write_text(text)
    r = run_fleet("diff", str(path))
    assert r.code == 0, r.text
    assert "replace" in r.out and "env.TZ" in r.out and '"UTC" -> "Europe/Paris"' in r.out
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    after = containers(docker_client, fleet_name)
    assert after["agent:web"].id == first["agent:web"].id
    assert after["agent:worker"].id != first["agent:worker"].id
    assert "TZ=Europe/Paris" in after["agent:worker"].attrs["Config"]["Env"]


def _http_ok(port: int, ip: str = "127.0.0.1") -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_removing_an_agent_destroys_it_and_keeps_its_neighbour(tmp_path, docker_client, base_image, fleet_name):
    path = write(tmp_path, two_agents(fleet_name, base_image))
    assert run_fleet("apply", str(path)).code == 0
    before = containers(docker_client, fleet_name)
    path.write_text(path.read_text().split("  worker:")[0])
    r = run_fleet("diff", str(path))
    assert "destroy" in r.out and "not in fleet.yaml" in r.out
    r = run_fleet("apply", "--no-prune", str(path))
    assert r.code == 0 and "up to date" in r.out, r.text
    assert set(containers(docker_client, fleet_name)) == {"agent:web", "agent:worker"}
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    after = containers(docker_client, fleet_name)
    assert set(after) == {"agent:web"}
    assert after["agent:web"].id == before["agent:web"].id
    assert after["agent:web"].status == "running"


def test_shared_host_agents_share_workspace_and_network(tmp_path, docker_client, base_image, fleet_name):
    ws = tmp_path / "ws"
    ws.mkdir()
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        hosts:
          pod:
            image: {base_image}
            workspace: ./ws
        agents:
          impl:
            host: pod
            command: "python3 -m http.server 3000"
            ports: {{web: 3000}}
          tester:
            host: pod
            command: ["sleep", "infinity"]
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    cs = containers(docker_client, fleet_name)
    assert set(cs) == {"host:pod", "agent:impl", "agent:tester"}
    impl, tester, holder = cs["agent:impl"], cs["agent:tester"], cs["host:pod"]
    # one working directory: a file written by one agent is seen by the other and on disk
    exec_out(impl, "echo from-impl > /workspace/shared.txt")
    assert exec_out(tester, "cat /workspace/shared.txt").strip() == "from-impl"
    assert (ws / "shared.txt").read_text().strip() == "from-impl"
    # one network: the tester reaches the impl agent's server on localhost
    wait_for(lambda: tester.exec_run(["python3", "-c", "import urllib.request;urllib.request.urlopen('http://127.0.0.1:3000/')"])[0] == 0,
             what="impl's server from tester")
    # the holder publishes nothing: its agents' ports are reached at its bridge address
    holder.reload()
    assert not holder.attrs["NetworkSettings"]["Ports"]
    ip = next(n["IPAddress"] for n in holder.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"])
    wait_for(lambda: _http_ok(3000, ip), what="server at the holder's address")
    assert impl.attrs["HostConfig"]["NetworkMode"] == f"container:{holder.id}"

    # replacing one agent leaves its neighbour and the holder alone
    path.write_text(path.read_text().replace('command: ["sleep", "infinity"]', 'command: ["sleep", "99999"]'))
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    after = containers(docker_client, fleet_name)
    assert after["agent:impl"].id == impl.id and after["host:pod"].id == holder.id
    assert after["agent:tester"].id != tester.id

    # the last agent leaving takes the host with it
    path.write_text(_without_agents(path.read_text()))
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert containers(docker_client, fleet_name) == {}


def _without_agents(text: str) -> str:
    head = text.split("agents:")[0]
    return head + "agents: {}\n"


def test_port_set_change_replaces_only_that_agent_not_the_shared_host(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        hosts:
          pod: {{image: {base_image}}}
        agents:
          a:
            host: pod
            command: ["sleep", "infinity"]
            ports: {{web: 3000}}
          b:
            host: pod
            command: ["sleep", "infinity"]
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    exec_out(containers(docker_client, fleet_name)["agent:a"], "echo kept > /workspace/work.txt")
    before = containers(docker_client, fleet_name)
    path.write_text(path.read_text().replace("ports: {web: 3000}", "ports: {web: 3000, api: 4000}"))
    r = run_fleet("diff", str(path))
    assert "replace" in r.out and "agent a" in r.out and "ports.api" in r.out, r.out
    assert "host pod" not in r.out and "agent b" not in r.out, r.out
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    after = containers(docker_client, fleet_name)
    assert after["host:pod"].id == before["host:pod"].id
    assert after["agent:b"].id == before["agent:b"].id
    assert after["agent:a"].id != before["agent:a"].id
    assert after["agent:a"].attrs["HostConfig"]["NetworkMode"] == f"container:{after['host:pod'].id}"
    assert exec_out(after["agent:a"], "cat /workspace/work.txt").strip() == "kept"
    assert run_fleet("apply", str(path)).out.strip().endswith("is up to date (3 unchanged)")


def test_stopped_agent_and_stopped_holder_are_started_again(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        hosts:
          pod: {{}}
        agents:
          solo: {{command: ["sleep", "infinity"]}}
          member: {{host: pod, command: ["sleep", "infinity"]}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    cs = containers(docker_client, fleet_name)
    cs["agent:solo"].kill()
    cs["host:pod"].stop(timeout=2)
    r = run_fleet("diff", str(path))
    assert "start" in r.out and "exited 137" in r.out, r.out
    assert "restart" in r.out and "host pod restarted" in r.out, r.out
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    for c in containers(docker_client, fleet_name).values():
        c.reload()
        assert c.status == "running"
    member = containers(docker_client, fleet_name)["agent:member"]
    assert member.exec_run(["true"])[0] == 0
    assert "up to date" in run_fleet("apply", str(path)).out


def test_hand_started_and_other_fleet_containers_are_never_touched(tmp_path, docker_client, base_image, fleet_name):
    by_hand = docker_client.containers.run(
        base_image, ["sleep", "infinity"], detach=True, labels={"dev.fleet.test": "1"}, name=f"{fleet_name}-byhand"
    )
    other = docker_client.containers.run(
        base_image, ["sleep", "infinity"], detach=True, name=f"{fleet_name}-other",
        labels={"dev.fleet.test": "1", "dev.fleet.project": f"{fleet_name}x", "dev.fleet.kind": "agent", "dev.fleet.agent": "web"},
    )
    # a stranger squatting on the name fleet would use: fleet must refuse, not remove it
    squatter = docker_client.containers.run(
        base_image, ["sleep", "infinity"], detach=True, labels={"dev.fleet.test": "1"}, name=f"fleet_{fleet_name}_worker"
    )
    try:
        path = write(tmp_path, two_agents(fleet_name, base_image))
        r = run_fleet("apply", str(path))
        assert r.code == 1
        assert f"failed to create agent worker: the container name fleet_{fleet_name}_worker is taken by container {squatter.id[:12]}" in r.out, r.text
        assert r.out.count("agent worker: agent worker") == 0
        assert set(containers(docker_client, fleet_name)) == {"agent:web"}  # independent work went on
        r = run_fleet("destroy", "--yes", str(path))
        assert r.code == 0, r.text
        assert containers(docker_client, fleet_name) == {}
        for c in (by_hand, other, squatter):
            c.reload()
            assert c.status == "running"
    finally:
        for c in (by_hand, other, squatter):
            c.remove(force=True)


def test_bad_input_changes_nothing(tmp_path, docker_client, base_image, fleet_name):
    path = write(tmp_path, two_agents(fleet_name, base_image))
    assert run_fleet("apply", str(path)).code == 0
    before = {k: (c.id, c.status) for k, c in containers(docker_client, fleet_name).items()}
    path.write_text(path.read_text().replace("ports: {web: 3000}", "ports: {web: 70000}").replace("worker:", "Worker:"))
    for cmd in ("apply", "diff", "validate", "destroy"):
        r = run_fleet(cmd, "--yes", str(path)) if cmd in ("apply", "destroy") else run_fleet(cmd, str(path))
        assert r.code == 1, (cmd, r.text)
        assert "Traceback" not in r.text
        assert "fleet.yaml:11:" in r.err and "agents.web.ports.web" in r.err and "65535" in r.err, r.err
        assert "agents.Worker" in r.err
    after = {k: (c.id, c.status) for k, c in containers(docker_client, fleet_name).items()}
    assert after == before


def test_engine_unavailable_is_one_clear_line(tmp_path, base_image):
    path = write(tmp_path, two_agents("nowhere", base_image))
    r = run_fleet("apply", str(path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.code == 1
    assert "Traceback" not in r.text
    assert "no Docker engine answers" in r.err


def test_build_context_change_replaces_agents_using_it(tmp_path, docker_client, base_image, fleet_name):
    ctx = tmp_path / "img"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY hello.txt /hello.txt\n")
    (ctx / "hello.txt").write_text("v1\n")
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        agents:
          builder:
            build: {{context: ./img}}
            command: ["sleep", "infinity"]
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    c1 = containers(docker_client, fleet_name)["agent:builder"]
    assert exec_out(c1, "cat /hello.txt").strip() == "v1"
    assert "up to date" in run_fleet("apply", str(path)).out
    (ctx / "hello.txt").write_text("v2\n")
    r = run_fleet("diff", str(path))
    assert "replace" in r.out and "image" in r.out, r.out
    assert run_fleet("apply", str(path)).code == 0
    c2 = containers(docker_client, fleet_name)["agent:builder"]
    assert c2.id != c1.id and exec_out(c2, "cat /hello.txt").strip() == "v2"
    try:
        docker_client.images.remove(c1.image.id, force=True)
        docker_client.images.remove(c2.image.id, force=True)
    except Exception:
        pass


def test_killed_apply_is_recovered_by_the_next(tmp_path, docker_client, base_image, fleet_name):
    agents = "\n".join(f"  a{i}: {{command: [sleep, infinity]}}" for i in range(8))
    path = tmp_path / "fleet.yaml"
    path.write_text(f"fleet: {fleet_name}\ndefaults: {{image: {base_image}}}\nagents:\n{agents}\n")
    env = dict(os.environ, NO_COLOR="1")
    for delay_polls in (1, 3):
        proc = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--parallel", "2", str(path)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: len(docker_client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet_name}"})) >= delay_polls,
                 what="the first containers")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        r = run_fleet("apply", str(path))
        assert r.code == 0, r.text
        cs = containers(docker_client, fleet_name)  # asserts no duplicates
        assert set(cs) == {f"agent:a{i}" for i in range(8)}
        for c in cs.values():
            assert c.status == "running" and c.labels["dev.fleet.spec-hash"]
        # nothing unlabelled with our names
        named = docker_client.containers.list(all=True, filters={"name": f"fleet_{fleet_name}_"})
        assert all(c.labels.get("dev.fleet.project") == fleet_name for c in named)
        assert "up to date" in run_fleet("apply", str(path)).out
        if delay_polls == 1:
            run_fleet("destroy", "--yes", str(path))


def test_two_applies_at_once_converge_without_duplicates(tmp_path, docker_client, base_image, fleet_name):
    agents = "\n".join(f"  a{i}: {{command: [sleep, infinity]}}" for i in range(4))
    path = tmp_path / "fleet.yaml"
    path.write_text(f"fleet: {fleet_name}\ndefaults: {{image: {base_image}}}\nagents:\n{agents}\n")
    env = dict(os.environ, NO_COLOR="1")
    procs = [
        subprocess.Popen([sys.executable, "-m", "reconciler", "apply", str(path)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert set(containers(docker_client, fleet_name)) == {f"agent:a{i}" for i in range(4)}
    assert any("up to date" in o[0] for o in outs), outs  # the second read fresh state after waiting


def test_demo_fleet_yaml_is_valid():
    r = run_fleet("validate", str(ROOT / "fleet.yaml"))
    assert r.code == 0, r.text
