"""The backhaul through the real `modal` SDK against the fake control plane: the
relay runs in a sandbox (a real container) as a long-lived exec, and curl in the
sandbox reaches an HTTP server on this machine through it, which the sandbox
cannot dial itself. 20 concurrent requests, a 10 MB body both ways, and a killed
relay exec restarted by the local side."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from reconciler.providers.modal.backhaul import Backhaul, Limits, modal_opener

pytestmark = pytest.mark.docker

PORT = 3128  # in the sandbox


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:  # noqa: N802
        self._answer(f"hello from this machine: {self.command} {self.path}\n".encode())

    def do_POST(self) -> None:  # noqa: N802
        try:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(body)  # echo: the body comes back the other way
        except ConnectionError:  # the client went (the slow test kills the relay mid-transfer)
            self.close_connection = True

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[:2]  # type: ignore[misc]  # (host, port) for AF_INET
    server.shutdown()
    server.server_close()


async def sh(sb: Any, script: str, timeout: int = 120) -> tuple[int, str]:
    p = await sb.exec.aio("sh", "-c", script, text=True, timeout=timeout)
    out = await p.stdout.read.aio()
    return await p.wait.aio(), out


@contextlib.asynccontextmanager
async def backhaul(sb: Any, upstream: tuple[str, int]):
    bh = Backhaul(modal_opener(sb), upstream, PORT, limits=Limits(ping_interval=1.0, dead_after=10.0),
                  backoff=(0.2, 2.0))
    task = asyncio.ensure_future(bh.run())
    try:
        await asyncio.wait_for(bh.up.wait(), 60)
        yield bh
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def new_sandbox(modal_app: Any, modal_client: Any) -> Any:
    import modal

    return await modal.Sandbox.create.aio(app=modal_app, image=modal.Image.from_registry("python:3.12-slim"),
                                          client=modal_client, timeout=600)


CURL = f"curl -sS --max-time 30 -x http://127.0.0.1:{PORT}"


def test_sandbox_reaches_this_machine_through_the_relay(fake_modal, modal_app, modal_client, local_server):
    async def go() -> None:
        sb = await new_sandbox(modal_app, modal_client)
        # the sandbox cannot dial the server itself (it listens on this machine's loopback)
        code, _ = await sh(sb, f"curl -s --max-time 3 http://127.0.0.1:{local_server[1]}/")
        assert code != 0
        async with backhaul(sb, local_server) as bh:
            code, out = await sh(sb, f"{CURL} http://granted.example/hello")
            assert code == 0 and out == "hello from this machine: GET http://granted.example/hello\n", out

            code, out = await sh(sb, f"""
                for i in $(seq 20); do {CURL} http://granted.example/n$i -o /tmp/r$i & done; wait
                cat /tmp/r* | sort""")
            assert code == 0
            assert sorted(out.splitlines()) == sorted(f"hello from this machine: GET http://granted.example/n{i}"
                                                      for i in range(1, 21))

            code, out = await sh(sb, f"""
                head -c 10485760 /dev/urandom >/tmp/up
                {CURL} --data-binary @/tmp/up -H 'Content-Type: application/octet-stream' http://granted.example/echo -o /tmp/down
                sha256sum </tmp/up; sha256sum </tmp/down; wc -c </tmp/down""")
            lines = out.split("\n")
            assert code == 0 and lines[0] == lines[1] and lines[2].strip() == "10485760", out

            # kill the relay: the exec ends, the local side starts a new one
            assert bh.starts == 1
            code, _ = await sh(sb, f"kill -9 $(cat /tmp/fleet-backhaul-{PORT}.pid)")
            assert code == 0
            for _ in range(300):
                if bh.starts >= 2 and bh.up.is_set():
                    break
                await asyncio.sleep(0.1)
            assert bh.starts == 2 and bh.up.is_set(), bh.ended
            assert bh.ended == ["the exec ended"]
            code, out = await sh(sb, f"{CURL} http://granted.example/again")
            assert code == 0 and out.endswith("GET http://granted.example/again\n"), out

    asyncio.run(asyncio.wait_for(go(), 240))


def test_a_terminated_sandbox_ends_the_session_and_retries_back_off(fake_modal, modal_app, modal_client, local_server):
    async def go() -> None:
        sb = await new_sandbox(modal_app, modal_client)
        async with backhaul(sb, local_server) as bh:
            await sb.terminate.aio()
            for _ in range(300):
                if not bh.up.is_set() and bh.ended and "exec" in bh.ended[0]:
                    break
                await asyncio.sleep(0.1)
            assert not bh.up.is_set() and bh.ended, bh.ended
            await asyncio.sleep(2)
            assert any("cannot start the relay" in why for why in bh.ended[1:]), bh.ended
            assert len(bh.ended) < 10, bh.ended  # backed off, not a hot loop

        # an owner that knows a gone sandbox is for good: run() returns
        bh = Backhaul(modal_opener(sb), local_server, PORT, give_up=lambda e: type(e).__name__ == "NotFoundError")
        await asyncio.wait_for(bh.run(), 30)
        assert bh.starts == 0 and "NotFoundError" in (bh.last_error or "")

    asyncio.run(asyncio.wait_for(go(), 120))


@pytest.mark.slow
def test_relay_killed_under_load_ends_open_requests_and_serves_new_ones(fake_modal, modal_app, modal_client,
                                                                          local_server):
    async def go() -> None:
        sb = await new_sandbox(modal_app, modal_client)
        async with backhaul(sb, local_server) as bh:
            for round_ in range(3):
                script = f"""
                    head -c 20000000 /dev/urandom >/tmp/up
                    for i in $(seq 10); do {CURL} --data-binary @/tmp/up http://granted.example/echo -o /dev/null \
                        -w '%{{http_code}}\\n' >/tmp/k$i 2>/dev/null & done
                    sleep 0.5; kill -9 $(cat /tmp/fleet-backhaul-{PORT}.pid); wait; cat /tmp/k*"""
                code, out = await sh(sb, script)
                assert code == 0
                codes = out.split()  # every curl ended (none hung): done before the kill, or cut off
                # (100: the server's "100 Continue" had come back when the relay died)
                assert len(codes) == 10 and set(codes) <= {"200", "100", "000"} and "000" in codes, out
                for _ in range(300):
                    if bh.starts == round_ + 2 and bh.up.is_set():
                        break
                    await asyncio.sleep(0.1)
                assert bh.starts == round_ + 2 and bh.up.is_set(), bh.ended
                code, out = await sh(sb, f"{CURL} http://granted.example/after")
                assert code == 0 and out.endswith("GET http://granted.example/after\n"), out

    asyncio.run(asyncio.wait_for(go(), 300))
