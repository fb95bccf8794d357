"""Credential binding, without the engine: the proxy accepts a credential only
from an address of the container it is bound to, asks again when the address
is unknown (a restart), caches answers briefly, and fails closed."""

from __future__ import annotations

import asyncio
import base64
import socket

import pytest

from reconciler.grants import agents as agentmap
from reconciler.grants.catalogue import rules_for
from reconciler.grants.forward import ForwardConfig
from reconciler.grants.peers import Peers
from tests.grants.helpers import ProxyThread, host_peers


def test_peers_cache_refresh_and_fail_closed():
    table = {"c1": {"172.17.0.5"}}
    calls = []

    def lookup(cid):
        calls.append(cid)
        if cid == "broken":
            raise OSError("engine down")
        return set(table.get(cid, set()))

    async def go():
        p = Peers(lookup, ttl=60, min_refresh=0.2)
        assert await p.owns("c1", "172.17.0.5")
        assert await p.owns("c1", "::ffff:172.17.0.5")  # a dual-stack socket's view of the same peer
        assert len(calls) == 1  # cached
        assert not await p.owns("c1", "172.17.0.9")  # unknown, but the engine was asked a moment ago
        assert len(calls) == 1  # no engine call per refused connection
        await asyncio.sleep(0.25)
        assert not await p.owns("c1", "172.17.0.9")  # unknown: the engine is asked again, still not its address
        assert len(calls) == 2
        assert not await p.owns("c1", "172.17.0.9")
        assert len(calls) == 2
        table["c1"] = {"172.17.0.9"}  # the container restarted with a new address
        await asyncio.sleep(0.25)
        assert await p.owns("c1", "172.17.0.9")
        assert not await p.owns("broken", "172.17.0.5")  # the engine does not answer: refused
        assert not await p.owns(None, "172.17.0.5") and not await p.owns("c1", None)
        # concurrent connections share one engine call
        n = len(calls)
        table["c2"] = {"10.0.0.2"}
        assert all(await asyncio.gather(*(p.owns("c2", "10.0.0.2") for _ in range(20))))
        assert len(calls) == n + 1

    asyncio.run(go())


@pytest.fixture
def proxy(fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")
    bound = agentmap.issue("f1", "bound", ["github"], rules_for(["github"]))
    elsewhere = agentmap.issue("f1", "elsewhere", ["github"], rules_for(["github"]))
    unbound = agentmap.issue("f1", "unbound", ["github"], rules_for(["github"]))
    assert agentmap.bind("f1", "bound", "c-bound") and agentmap.bind("f1", "elsewhere", "c-elsewhere")
    assert not agentmap.bind("f1", "nobody", "c-x")
    t = ProxyThread(ForwardConfig(bind="127.0.0.1", port=0, resolve={"plain.test": ("127.0.0.1", 9)}),
                    host_peers({"c-bound": {"127.0.0.1"}, "c-elsewhere": {"172.17.0.99"}})).start()
    yield t.wait_listening(), bound, elsewhere, unbound
    t.stop()


def _status(port: int, cred: str, request: str) -> str:
    auth = base64.b64encode(f"fleet:{cred}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.replace("\r\n\r\n", f"\r\nProxy-Authorization: Basic {auth}\r\n\r\n", 1).encode())
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_only_the_bound_container_may_use_a_credential(proxy):
    port, bound, elsewhere, unbound = proxy
    connect = "CONNECT [::ffff:127.0.0.1]:9 HTTP/1.1\r\nHost: x\r\n\r\n"
    # the bound one passes authentication (and is then refused the destination)
    assert _status(port, bound, connect).startswith("HTTP/1.1 403")
    # bound to a container at another address, or to no container: 407
    assert _status(port, elsewhere, connect).startswith("HTTP/1.1 407")
    assert _status(port, unbound, connect).startswith("HTTP/1.1 407")
    assert _status(port, elsewhere, "GET http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\n\r\n").startswith("HTTP/1.1 407")


def test_a_new_credential_is_unbound_until_its_container_exists(fleet_home):
    agentmap.issue("f1", "a", ["github"], rules_for(["github"]))
    assert agentmap.entries() and all(e.container is None for e in agentmap.entries().values())
    agentmap.bind("f1", "a", "abc123")
    assert [e.container for e in agentmap.entries().values()] == ["abc123"]
    agentmap.issue("f1", "a", ["github"], rules_for(["github"]))  # recreated: the new credential starts unbound
    assert [e.container for e in agentmap.entries().values()] == [None]
