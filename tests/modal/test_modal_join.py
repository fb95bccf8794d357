"""Agents with ports join and leave a running Modal shared host without
replacing its sandbox (the real CLI, the real `modal` SDK, the fake control
plane whose sandboxes are real containers and whose tunnels are real TLS
endpoints): the sandbox has one tunnel, to a port router inside it, and the
routing proxy tells the router which port to use. The neighbour keeps its
process and generation and gets its first message once; the new agent's URL
answers, the removed one's gives 404; the router refuses undeclared ports."""

from __future__ import annotations

import json
import ssl
import subprocess
import textwrap
import urllib.request
from pathlib import Path

import pytest

from reconciler.core.model import MODAL_ROUTER_PORT
from reconciler.providers.modal.driver import AGENT_TAG
from tests.conftest import free_port
from tests.modal.helpers import READER, curl, exec_text, fleet, got, sandboxes, terminate_fleet, wait_for

pytestmark = pytest.mark.docker


def _server(name: str, port: int) -> str:
    return f"mkdir -p /tmp/{name} && echo {name}-web > /tmp/{name}/index.html && exec python3 -m http.server {port} --directory /tmp/{name}"


# docs-agent's server: "docs-web" for a plain request, an echo after an Upgrade (as WebSocket does)
ECHO_SERVER = r'''
import asyncio, sys

async def serve(r, w):
    head = await r.readuntil(b"\r\n\r\n")
    if b"\r\nupgrade:" in head.lower():
        w.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: fleet-echo\r\n\r\n")
        while data := await r.read(4096):
            w.write(data)
            await w.drain()
    else:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\ndocs-web\n")
        await w.drain()
    w.close()

async def main():
    async with await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1])) as server:
        await server.serve_forever()

asyncio.run(main())
'''


def _upgrade_echo(proxy_port: int, hostname: str, ca: Path) -> bytes:
    """An Upgrade through the routing proxy and the router; what comes back after 101."""
    import socket

    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname) as s:
            s.sendall(f"GET /echo HTTP/1.1\r\nHost: {hostname}:{proxy_port}\r\nConnection: Upgrade\r\n"
                      "Upgrade: fleet-echo\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            s.sendall(b"ping over the tunnel\n")
            got = head.split(b"\r\n\r\n", 1)[1]
            while not got.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got


def _yaml(fleet: str, proxy_port: int, ws: Path, docs: bool) -> str:
    docs_block = textwrap.indent(textwrap.dedent("""
        docs-agent:
          host: auth-host
          command: "exec python3 /workspace/echo_server.py 4000"
          ports: {web: 4000}
    """), "  ") if docs else ""
    return textwrap.dedent(f"""
        fleet: {fleet}
        proxy: {{port: {proxy_port}}}
        hosts:
          auth-host:
            provider: modal
            image: python:3.12-slim
            workspace: {ws}
            timeout: 3600
        agents:
          test-agent:
            host: auth-host
            command: {json.dumps(READER.format(name="test"))}
            message: "Write integration tests"
          impl-agent:
            host: auth-host
            command: {json.dumps(_server("impl", 3000))}
            ports: {{web: 3000}}
    """) + docs_block


def _via_tunnel(tls_port: int, headers: dict[str, str]) -> tuple[int, str]:
    """A request straight to the sandbox's router tunnel (as anyone on the internet could)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{tls_port}/", headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_agents_with_ports_join_and_leave_a_modal_host_without_replacing_it(fake_modal, fleet_name, tmp_path,
                                                                             fleet_home):
    env = fake_modal.env()
    ws = tmp_path / "app"
    ws.mkdir()
    (ws / "echo_server.py").write_text(ECHO_SERVER)
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(_yaml(fleet_name, port, ws, docs=False))
    impl_url = f"https://web.impl-agent.localhost:{port}/"
    docs_url = f"https://web.docs-agent.localhost:{port}/"
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        [sb] = sandboxes(fake_modal, fleet_name)
        assert list(sb.tunnels) == [MODAL_ROUTER_PORT]  # one tunnel, whatever the agents' ports
        tunnel = sb.tunnels[MODAL_ROUTER_PORT].tls_port
        assert wait_for(lambda: curl(impl_url, fleet_home) == (200, "impl-web"), what=f"{impl_url}")
        [route] = json.loads((fleet_home / "routes.json").read_text())["fleets"][fleet_name]["routes"]
        assert route["target"] == f"https://127.0.0.1:{tunnel}" and route["inner_port"] == 3000, route
        wait_for(lambda: got(path, env, "test-agent", "test") == ["Write integration tests"], what="first message")
        neighbour_pid = exec_text(path, env, "test-agent", "cat /run/fleet/test-agent/pid /run/fleet/test-agent/agent.pid")
        neighbour_tag = sb.tags[AGENT_TAG + "test-agent"]

        def neighbour_untouched() -> None:
            [now] = sandboxes(fake_modal, fleet_name)
            assert now.id == sb.id
            assert now.tags[AGENT_TAG + "test-agent"] == neighbour_tag
            assert exec_text(path, env, "test-agent",
                             "cat /run/fleet/test-agent/pid /run/fleet/test-agent/agent.pid") == neighbour_pid
            assert got(path, env, "test-agent", "test") == ["Write integration tests"]  # not typed again

        # -- join with a port: no host action, the new URL answers through the same tunnel
        path.write_text(_yaml(fleet_name, port, ws, docs=True))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert "join     agent docs-agent" in r.out and " host auth-host" not in r.out.replace("on host", ""), r.out
        neighbour_untouched()
        assert wait_for(lambda: curl(docs_url, fleet_home) == (200, "docs-web"), what=f"{docs_url}")
        assert curl(impl_url, fleet_home) == (200, "impl-web")
        # an upgraded connection (WebSocket's way) passes through proxy, tunnel and router both ways
        ca = fleet_home / "ca" / "ca.crt"
        assert _upgrade_echo(port, "web.docs-agent.localhost", ca) == b"ping over the tunnel\n"

        # -- the router forwards to declared ports only; a client cannot pick the port through the proxy
        exec_text(path, env, "test-agent", "mkdir -p /tmp/secret && echo secret > /tmp/secret/index.html && "
                  "(setsid nohup python3 -m http.server 5000 --directory /tmp/secret >/dev/null 2>&1 &)")
        wait_for(lambda: "secret" in exec_text(path, env, "test-agent", "curl -s http://127.0.0.1:5000/ || true"),
                 what="the undeclared server")
        assert _via_tunnel(tunnel, {"X-Fleet-Port": "4000"}) == (200, "docs-web")
        status, body = _via_tunnel(tunnel, {"X-Fleet-Port": "5000"})
        assert status == 403 and "not declared" in body, (status, body)
        assert _via_tunnel(tunnel, {})[0] == 400
        assert _via_tunnel(tunnel, {"X-Fleet-Port": "22"})[0] == 403
        proc_args = ["curl", "-s", "-m", "5", "-H", "X-Fleet-Port: 5000", "--cacert", str(fleet_home / "ca" / "ca.crt"),
                     impl_url]
        assert subprocess.run(proc_args, capture_output=True, text=True, timeout=15).stdout.strip() == "impl-web"

        # -- leave with a port: no host action, its URL gives 404, the router refuses its port
        path.write_text(_yaml(fleet_name, port, ws, docs=False))
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert "destroy  agent docs-agent" in r.out and " host auth-host" not in r.out.replace("on host", ""), r.out
        assert curl(docs_url, fleet_home)[0] == 404
        assert _via_tunnel(tunnel, {"X-Fleet-Port": "4000"})[0] == 403
        assert curl(impl_url, fleet_home) == (200, "impl-web")
        neighbour_untouched()
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text

        # -- a router that died comes back when an agent with ports is restarted
        exec_text(path, env, "test-agent", "kill $(cat /run/fleet/router.pid)")
        wait_for(lambda: curl(impl_url, fleet_home)[0] == 502, what="502 without the router")
        r = fleet("restart", "-f", str(path), "impl-agent", env=env)
        assert r.code == 0, r.text
        assert wait_for(lambda: curl(impl_url, fleet_home) == (200, "impl-web"), what="the router back")
    finally:
        terminate_fleet(fake_modal, fleet_name)


def test_a_sandbox_with_a_tunnel_per_port_is_replaced_once(fake_modal, modal_client, fleet_name, tmp_path, fleet_home):
    """A sandbox made by an older fleet (one tunnel per agent port, its spec
    without the router) is re-created once, saying why, then left alone."""
    import modal

    from reconciler.core import labels as L
    from reconciler.core.model import canonical_hash
    from reconciler.providers.modal.driver import PORTS_TAG, _b64
    from reconciler.core.reconcile import MIGRATE_TUNNELS

    env = fake_modal.env()
    ws = tmp_path / "app"
    ws.mkdir()
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(_yaml(fleet_name, port, ws, docs=False))
    old_spec = {"provider": "modal", "image": "python:3.12-slim", "ports": [3000]}
    try:
        app = modal.App.lookup(f"fleet-{fleet_name}", create_if_missing=True, client=modal_client)
        old = modal.Sandbox.create(
            app=app, name="auth-host", image=modal.Image.from_registry("python:3.12-slim"), timeout=600,
            workdir="/workspace", encrypted_ports=[3000], client=modal_client,
            tags={L.PROJECT: fleet_name, L.KIND: "host", L.HOST: "auth-host",
                  L.SPEC_HASH: _b64(canonical_hash(old_spec)), PORTS_TAG: "3000"},
        )
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert "replace  host auth-host" in r.out and MIGRATE_TUNNELS[:60] in r.out.replace("\n", " "), r.out
        [sb] = sandboxes(fake_modal, fleet_name)
        assert sb.id != old.object_id and list(sb.tunnels) == [MODAL_ROUTER_PORT]
        url = f"https://web.impl-agent.localhost:{port}/"
        assert wait_for(lambda: curl(url, fleet_home) == (200, "impl-web"), what=url)
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text
    finally:
        terminate_fleet(fake_modal, fleet_name)


def test_a_host_image_without_python3_runs_agents_without_ports_and_says_why_not_with(fake_modal, fleet_name,
                                                                                      tmp_path):
    env = fake_modal.env()
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM debian:bookworm\nRUN rm -f /usr/bin/python3* /usr/local/bin/python3*\n")
    port = free_port()
    path = tmp_path / "fleet.yaml"
    base = textwrap.dedent(f"""
        fleet: {fleet_name}
        proxy: {{port: {port}}}
        hosts:
          box: {{provider: modal, build: {{context: {ctx}}}}}
        agents:
          reader: {{host: box, command: {json.dumps(READER.format(name="reader"))}, message: hello}}
    """)
    path.write_text(base)
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert exec_text(path, env, "reader", "command -v python3 || echo none") == "none\n"
        wait_for(lambda: got(path, env, "reader", "reader") == ["hello"], what="first message")
        [sb] = sandboxes(fake_modal, fleet_name)
        path.write_text(base + "  web: {host: box, command: \"sleep 600\", ports: {web: 3000}}\n")
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 1, r.text
        assert "agent web" in r.text and "need python3 in its image" in r.text, r.text
        assert [s.id for s in sandboxes(fake_modal, fleet_name)] == [sb.id]
        assert got(path, env, "reader", "reader") == ["hello"]
    finally:
        terminate_fleet(fake_modal, fleet_name)
