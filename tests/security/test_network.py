"""Network isolation: fleet's containers sit on `fleet_agents`, a bridge with
inter-container traffic off, so an agent cannot connect to another host's
ports nor ARP-spoof its way into its traffic; they still reach this machine
(fleet-proxy, host-gateway). Attacks run from inside real containers."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.conftest import ROOT, free_port, run_fleet, wait_for

from .helpers import ARP_SPOOF, CHATTER, NETWORK, address, gateway, py, write
from .test_capabilities import _Sink

pytestmark = pytest.mark.docker

CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except OSError as e:
    print("refused", e)
"""


def _connect(container, ip: str, port: int) -> str:
    code, out = container.exec_run(["timeout", "10", "python3", "-c", CONNECT, ip, str(port)])
    return out.decode(errors="replace")


def test_agents_on_different_hosts_cannot_connect_to_each_other(tmp_path, docker_client, base_image, fleet_name):
    serve = '["python3", "-m", "http.server", "3000"]'
    path = write(tmp_path, f"""\
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        hosts:
          box:
            image: {base_image}
        agents:
          a:
            image: {base_image}
            command: ["sleep", "infinity"]
          b:
            image: {base_image}
            command: {serve}
            ports: {{web: 3000}}
          c:
            host: box
            command: {serve}
            ports: {{web: 3000}}
        """)
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    a = docker_client.containers.get(f"fleet_{fleet_name}_a")
    b = docker_client.containers.get(f"fleet_{fleet_name}_b")
    holder = docker_client.containers.get(f"fleet_{fleet_name}_host_box")
    net = docker_client.networks.get(NETWORK)
    assert net.attrs["Options"].get("com.docker.network.bridge.enable_icc") == "false"
    assert net.attrs["Labels"].get("dev.fleet.network") == "agents"
    import urllib.request

    for target in (b, holder):
        ip = address(target)
        # the servers answer (from this machine), so a refusal below is the network's doing
        wait_for(lambda: urllib.request.urlopen(f"http://{ip}:3000/", timeout=2).status == 200, what=f"{ip}:3000")
        out = _connect(a, ip, 3000)
        assert "connected" not in out and "refused" in out, (target.name, out)
    # this machine stays reachable through host-gateway, as fleet-proxy
    sink = _Sink()
    try:
        assert "connected" in _connect(a, "fleet-proxy", sink.port)
        assert "connected" in _connect(docker_client.containers.get(f"fleet_{fleet_name}_c"), "fleet-proxy", sink.port)
    finally:
        sink.close()


def test_two_applies_creating_the_network_at_once_both_succeed_and_it_converges_to_one(docker_client):
    """Two processes ensure the same (test-only) network at the same instant:
    both succeed with a network that exists and keeps inter-container traffic
    off; once the race is over, the next ensure leaves exactly one."""
    from reconciler.providers.docker.security import ensure_network

    name = f"fleet_agents_test{uuid.uuid4().hex[:8]}"
    code = (
        "import docker, sys; from reconciler.providers.docker.security import ensure_network; "
        "print(ensure_network(docker.from_env().api, sys.argv[1]))"
    )

    def present() -> list:
        return [n for n in docker_client.networks.list(names=[name]) if n.name == name]

    try:
        for _ in range(3):
            procs = [subprocess.Popen([sys.executable, "-c", code, name], cwd=ROOT, stdout=subprocess.PIPE, text=True)
                     for _ in range(2)]
            ids = {p.communicate(timeout=60)[0].strip() for p in procs}
            assert all(p.returncode == 0 for p in procs)
            left = {n.id: n for n in present()}
            assert ids <= set(left), (ids, left)  # nothing a racer picked was removed under it
            for n in left.values():
                n.reload()
                assert n.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"
            winner = ensure_network(docker_client.api, name, grace=0)
            assert [n.id for n in present()] == [winner]
            present()[0].remove()  # next round races a fresh creation again
    finally:
        for n in present():
            n.remove()


@pytest.mark.slow
def test_arp_spoofing_from_a_container_on_the_bridge_captures_nothing(tmp_path, docker_client, base_image, fleet_name):
    """A hand-started container with NET_RAW on the default bridge poisons the
    gateway's ARP entry towards a victim and sniffs for its packets to the
    gateway. Against a container on the default bridge this works (the control);
    against fleet's private agent, on its own L2 segment, it captures nothing."""
    path = write(tmp_path, f"""\
        fleet: {fleet_name}
        agents:
          victim:
            image: {base_image}
            command: ["sleep", "infinity"]
        """)
    assert run_fleet("apply", "--yes", str(path)).code == 0
    victim = docker_client.containers.get(f"fleet_{fleet_name}_victim")
    common = dict(detach=True, labels={"dev.fleet.test": "1"})
    attacker = docker_client.containers.run(base_image, ["sleep", "60"], cap_add=["NET_RAW"], **common)
    control = docker_client.containers.run(base_image, ["sleep", "60"], **common)
    sink = _Sink()
    try:
        def attack(target, ip) -> int:
            target.exec_run(["python3", "-c", CHATTER, gateway(), str(sink.port), "5"], detach=True)
            code, out = attacker.exec_run(["timeout", "15", "python3", "-c", ARP_SPOOF, ip, gateway(), str(sink.port), "4"])
            text = out.decode(errors="replace")
            assert code == 0 and text.startswith("captured"), text
            return int(text.split()[-1])

        control.reload()
        assert attack(control, control.attrs["NetworkSettings"]["IPAddress"]) > 0  # the attack works on the default bridge
        assert attack(victim, address(victim)) == 0
        # and from inside fleet's network nobody has the raw socket to try
        code, out = py(victim, "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)")
        assert code != 0 and "Operation not permitted" in out
    finally:
        sink.close()
        for c in (attacker, control):
            c.remove(force=True)


@pytest.mark.slow
def test_a_hundred_agents_fit_on_the_network(tmp_path, docker_client, base_image, fleet_name):
    """The shared network is one /16 of Docker's default pools: 100 agents (and
    thousands more) get addresses on it; each fleet does not take a pool."""
    agents = "\n".join(
        f"  a{i}:\n    image: {base_image}\n    command: [sleep, infinity]\n    restart: never" for i in range(100)
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(f"fleet: {fleet_name}\nagents:\n{agents}\n")
    r = run_fleet("apply", "--yes", "--parallel", "8", str(path), timeout=900)
    assert r.code == 0, r.text[-2000:]
    cs = docker_client.containers.list(filters={"label": f"dev.fleet.project={fleet_name}"})
    ips = {address(c) for c in cs}
    assert len(cs) == 100 and len(ips) == 100
    assert run_fleet("destroy", "--yes", str(path), timeout=900).code == 0
