"""What agents are given so fleet URLs work inside them: the names, the hosts
file, curl's resolve lines, and their rewriting in place."""

from __future__ import annotations

import os

from reconciler.providers.docker import agentnet
from tests.unit.builders import agent, desired, host


def test_names_are_every_routed_hostname_of_the_fleet():
    d = desired(agent("web", ports={"web": 3000}), agent("api", ports={"api": 8000, "admin": 8001}), agent("worker"))
    assert agentnet.names(d) == [
        "admin.api.localhost", "api.api.localhost", "web.web.localhost", "web.localhost",
    ]


def test_hosts_file_keeps_localhost_and_the_containers_own_name():
    text = agentnet.hosts_text("box", "172.17.0.1", [f"s.a{i}.localhost" for i in range(10)])
    lines = text.splitlines()
    assert "127.0.0.1\tlocalhost" in lines and "::1\tlocalhost ip6-localhost ip6-loopback" in lines
    assert "127.0.1.1\tbox" in lines and "172.17.0.1\tfleet-proxy" in lines
    routed = [ln for ln in lines if ln.startswith("172.17.0.1\ts.")]
    assert [len(ln.split()) - 1 for ln in routed] == [8, 2]  # a few names per line


def test_curlrc_resolves_each_name_at_the_proxy_port():
    text = agentnet.curlrc_text("172.17.0.1", 8080, ["web.a.localhost", "a.localhost"])
    assert 'resolve = "web.a.localhost:8080:172.17.0.1"' in text.splitlines()
    assert 'resolve = "a.localhost:8080:172.17.0.1"' in text.splitlines()


def test_setup_then_refresh_rewrites_in_place(fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_PROXY_AGENT_BIND", "172.30.0.1")
    before = desired(host("box"), agent("a", host="box", ports={"web": 3000}))
    env, binds = agentnet.container_setup(before, before.agents["a"])
    assert env["CURL_HOME"] == "/etc/fleet/curl" and env["SSL_CERT_FILE"] == "/etc/fleet/ca-bundle.crt"
    mounts = {v["bind"]: k for k, v in binds.items()}
    assert set(mounts) == {"/etc/hosts", "/etc/fleet/curl", "/etc/fleet/ca-bundle.crt"}
    assert all(v["mode"] == "ro" for v in binds.values())
    hosts = mounts["/etc/hosts"]
    inode = os.stat(hosts).st_ino
    assert "web.b.localhost" not in open(hosts).read()
    after = desired(host("box"), agent("a", host="box", ports={"web": 3000}), agent("b", ports={"web": 3000}))
    agentnet.refresh(after)
    assert os.stat(hosts).st_ino == inode, "a file bind mount pins the inode: rewrite in place"
    text = open(hosts).read()
    assert "172.30.0.1\tweb.a.localhost a.localhost web.b.localhost b.localhost" in text and "127.0.1.1\tbox" in text
    assert "web.b.localhost:8080:172.30.0.1" in (fleet_home / "agentnet" / before.fleet / "curl" / ".curlrc").read_text()
    bundle = open(mounts["/etc/fleet/ca-bundle.crt"]).read()
    assert "fleet routing CA" in bundle and "interception" not in bundle
    agentnet.forget(before.fleet, "a")
    assert not os.path.exists(hosts)


def test_grants_agents_keep_their_own_bundle(fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_PROXY_AGENT_BIND", "off")
    d = desired(agent("a", ports={"web": 3000}))
    env, binds = agentnet.container_setup(d, d.agents["a"], bundle=False)
    assert env == {} and binds == {}  # no gateway: nothing to point names at, and grants mount the bundle
