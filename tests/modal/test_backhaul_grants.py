"""A grant used from a Modal sandbox through the backhaul, with the real grants
forward proxy on this machine (fake control plane, a real container): curl in the
sandbox sends an HTTPS request via 127.0.0.1:3128 there with its per-agent proxy
credential; the relay brings the connection back here, the forward proxy
injects the token and the upstream receives it. The token is nowhere in the
sandbox. The credential is bound to the backhaul's source address, so only
connections through this sandbox's backhaul may use it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from reconciler.grants import agents as agentmap
from reconciler.grants import store
from reconciler.grants.catalogue import rules_for
from reconciler.grants.forward import ForwardConfig
from reconciler.grants.trust import ensure_bundle
from reconciler.providers.modal.backhaul import Backhaul, modal_opener
from tests.grants.helpers import ProxyThread, Upstream, host_peers
from tests.modal.test_backhaul_modal import new_sandbox, sh

pytestmark = pytest.mark.docker

TOKEN = "ghp_TESTtoken0123456789abcdefABCDEF"
SOURCE = "127.0.0.9"
FIND = r"""
import os, sys
token = (sys.argv[1] + sys.argv[2]).encode()
me = str(os.getpid())
for top in ("/tmp", "/root", "/run", "/etc", "/home", "/var", "/workspace"):
    for d, _, files in os.walk(top):
        for f in files:
            try:
                if token in open(os.path.join(d, f), "rb").read(50_000_000):
                    print(os.path.join(d, f))
            except OSError:
                pass
for pid in os.listdir("/proc"):
    if pid.isdigit() and pid != me:
        for what in ("environ", "cmdline"):
            try:
                if token in open(f"/proc/{pid}/{what}", "rb").read():
                    print(f"/proc/{pid}/{what}")
            except OSError:
                pass
"""  # this sandbox's backhaul dials the proxy from here


@pytest.fixture
def grants_proxy(tmp_path, fleet_home, monkeypatch):
    monkeypatch.setenv("FLEET_KEYRING", "off")
    up = Upstream(tmp_path / "upstream-ca", names=("api.github.com",))
    store.set_grant("github", TOKEN)
    bundle = ensure_bundle()
    cred = agentmap.issue("f1", "coder", ["github"], rules_for(["github"]))
    agentmap.bind("f1", "coder", "c-coder")
    peers = host_peers({"c-coder": {SOURCE}})
    proxy = ProxyThread(ForwardConfig(bind="127.0.0.1", port=0, resolve={"api.github.com": ("127.0.0.1", up.port)},
                                      upstream_ca=up.ca_file), peers).start()
    port = proxy.wait_listening()
    yield up, bundle, cred, port
    proxy.stop()
    up.stop()


def test_grant_injected_here_for_a_request_from_the_sandbox(fake_modal, modal_app, modal_client, grants_proxy):
    up, bundle, cred, port = grants_proxy

    async def go() -> None:
        sb = await new_sandbox(modal_app, modal_client)
        p = await sb.exec.aio("sh", "-c", "cat >/tmp/fleet-ca.pem", text=False)
        p.stdin.write(bundle.read_bytes())
        p.stdin.write_eof()
        await p.stdin.drain.aio()
        assert await p.wait.aio() == 0

        async def via(source: str | None, relay_port: int) -> str:
            bh = Backhaul(modal_opener(sb), ("127.0.0.1", port), relay_port, source=source)
            task = asyncio.ensure_future(bh.run())
            try:
                await asyncio.wait_for(bh.up.wait(), 60)
                code, out = await sh(sb, f"curl -sS --max-time 20 -x http://fleet:{cred}@127.0.0.1:{relay_port} "
                                         "--cacert /tmp/fleet-ca.pem -H 'Authorization: Bearer placeholder' "
                                         "-o /dev/null -w '%{http_connect} %{http_code}' https://api.github.com/echo/user")
                return out
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        assert await via(SOURCE, 3128) == "200 200"  # CONNECT, then the request inside
        assert up.headers_of()["authorization"] == f"Bearer {TOKEN}"
        n = len(up.requests)
        # the same credential through a connection from another address: refused
        assert await via(None, 3129) == "407 000"
        assert len(up.requests) == n

        # no file, environment or command line in the sandbox holds it (the search is
        # given the token in two halves, so that its own command line does not)
        p = await sb.exec.aio("python3", "-c", FIND, "-----BEGIN ", "CERTIFICATE-----", text=True)
        assert "/tmp/fleet-ca.pem" in (await p.stdout.read.aio()).split()  # the search finds what is there
        p = await sb.exec.aio("python3", "-c", FIND, TOKEN[:10], TOKEN[10:], text=True)
        out = await p.stdout.read.aio()
        assert await p.wait.aio() == 0 and out == "", out

    asyncio.run(asyncio.wait_for(go(), 180))
