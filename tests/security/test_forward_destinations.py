"""The forward proxy's destination filter, as a unit and through a real proxy on
127.0.0.1: every spelling of loopback, unspecified, link-local, this machine's
own and bridge addresses is refused, for CONNECT and absolute-form requests,
while ordinary addresses and FLEET_RESOLVE entries pass."""

from __future__ import annotations

import ipaddress
import socket
import subprocess

import pytest

from reconciler.grants import agents as agentmap
from reconciler.grants import destinations as d
from reconciler.grants.catalogue import rules_for
from reconciler.grants.forward import ForwardConfig, bridge_gateway
from tests.grants.helpers import ProxyThread, host_peers

from .forward_world import Listener

LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.2", "0x7f.1",
                      "::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "0:0:0:0:0:ffff:127.0.0.1", "::127.0.0.1",
                      "::ffff:0:127.0.0.1", "64:ff9b::127.0.0.1", "2002:7f00:1::1", "localhost"]
UNSPECIFIED = ["0.0.0.0", "0", "::", "0.1.2.3", "::ffff:0.0.0.0"]
LINK_LOCAL = ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "fe80::1%1", "0xa9fea9fe"]


def resolved(spelling: str) -> list[str]:
    """What the proxy connects to for `spelling`: getaddrinfo's answers."""
    return sorted({i[4][0] for i in socket.getaddrinfo(spelling, 80, type=socket.SOCK_STREAM)})


@pytest.mark.parametrize("spelling", LOOPBACK_SPELLINGS + UNSPECIFIED + LINK_LOCAL)
def test_every_spelling_is_refused_once_resolved(spelling):
    addrs = resolved(spelling)
    assert addrs
    for a in addrs:
        assert d.refusal(a), (spelling, a)


def test_python_alone_would_miss_the_mapped_forms():
    # the reason this module exists: ipaddress judges ::ffff:127.0.0.1 not loopback
    assert not ipaddress.ip_address("::ffff:127.0.0.1").is_loopback
    assert d.refusal("::ffff:127.0.0.1") == "loopback, embedded in ::ffff:7f00:1"


def test_this_machines_addresses_and_bridges_are_refused():
    local = d.scan()
    assert ipaddress.ip_address("127.0.0.1") in local.addresses
    gw = bridge_gateway()
    assert gw, "no Docker bridge on this machine"
    assert d.refusal(gw) and d.refusal(f"::ffff:{gw}")
    net = next(n for n in local.networks if ipaddress.ip_address(gw) in n)
    assert d.refusal(str(net.network_address + 5)), "a container behind the bridge"
    for a in local.addresses:  # every address of every interface
        assert d.refusal(str(a)), a
        if a.version == 4:
            assert d.refusal(f"::ffff:{a}"), a


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "::ffff:8.8.8.8", "2606:4700::1111", "140.82.112.3", "64:ff9b::808:808"])
def test_ordinary_addresses_pass(addr):
    assert d.refusal(addr, d.Local()) is None


def test_scan_parsers():
    fib = """Main:
  +-- 0.0.0.0/0 3 0 4
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 10.9.0.7
        /32 host LOCAL
        /24 link UNICAST
"""
    addrs, nets = d._fib_local_v4(fib)
    assert addrs == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.9.0.7")}
    assert nets == [ipaddress.ip_network("127.0.0.0/8")]
    route = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nbr-1\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\neth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
    assert d._bridge_routes_v4(route, {"br-1"}) == [ipaddress.ip_network("172.18.0.0/16")]
    assert d._if_inet6("fd000000000000000000000000000002 02 40 00 80 eth0\n") == {ipaddress.ip_address("fd00::2")}


# -- through a real forward proxy on 127.0.0.1 ------------------------------------------------


@pytest.fixture
def proxied(fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")
    listener = Listener()
    cred = agentmap.issue("f1", "coder", ["github"], rules_for(["github"]))
    agentmap.bind("f1", "coder", "c-coder")
    resolve = {"local.test": ("127.0.0.1", listener.port)}
    proxy = ProxyThread(ForwardConfig(bind="127.0.0.1", port=0, resolve=resolve), host_peers({"c-coder": {"127.0.0.1"}})).start()
    port = proxy.wait_listening()
    yield listener, cred, port
    proxy.stop()
    listener.close()


def ask(port: int, request: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and (b"fleet-proxy" in data or len(data) > 2000):
                break
    return data.decode(errors="replace")


def test_the_proxy_refuses_every_spelling_for_connect_and_absolute_form(proxied):
    listener, cred, port = proxied
    import base64

    auth = base64.b64encode(f"fleet:{cred}".encode()).decode()
    gw = bridge_gateway()
    targets = [*(s if ":" not in s else f"[{s}]" for s in LOOPBACK_SPELLINGS + UNSPECIFIED), "169.254.169.254",
               gw, f"[::ffff:{gw}]"]
    for t in targets:
        connect = ask(port, f"CONNECT {t}:{listener.port} HTTP/1.1\r\nHost: {t}:{listener.port}\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
        assert connect.startswith("HTTP/1.1 403"), (t, connect)
        assert "does not connect to this machine" in connect, (t, connect)
        absolute = ask(port, f"GET http://{t}:{listener.port}/ HTTP/1.1\r\nHost: {t}\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
        assert absolute.startswith("HTTP/1.1 403"), (t, absolute)
    assert listener.hits == 0
    # FLEET_RESOLVE stays the one way to point at this machine
    ok = ask(port, f"GET http://local.test/ HTTP/1.1\r\nHost: local.test\r\nProxy-Authorization: Basic {auth}\r\n\r\n")
    assert ok.startswith("HTTP/1.1 200") and listener.hits == 1, ok


def test_curl_through_the_proxy_is_refused_too(proxied):
    listener, cred, port = proxied
    for url in (f"http://[::ffff:127.0.0.1]:{listener.port}/", f"http://127.1:{listener.port}/"):
        for extra in ([], ["-p"]):  # absolute form, then CONNECT
            r = subprocess.run(["curl", "-s", "--noproxy", "", "-o", "/dev/null", "-w", "%{http_code} %{http_connect}",
                                "-x", f"http://fleet:{cred}@127.0.0.1:{port}", *extra, url], capture_output=True, text=True, timeout=30)
            assert "403" in r.stdout.split(), (url, extra, r.stdout)
    assert listener.hits == 0
