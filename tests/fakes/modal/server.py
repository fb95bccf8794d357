"""`FakeModal`: the fake control plane and command router served on 127.0.0.1 from a
background thread with its own event loop, so synchronous tests (and the `modal` SDK's
own loop thread) can talk to it like to Modal.

    fake = FakeModal(image="fleet-base:bookworm").start()
    os.environ.update(fake.env())
    client = modal.Client.from_credentials(fake.token_id, fake.token_secret)
    ...
    fake.stop()   # terminates every sandbox: removes its containers, images, volumes
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from grpclib.server import Server

from .control import FakeControlPlane
from .counting import Counted, RpcCounter
from .core import FakeModalCore, Sandbox
from .router import FakeCommandRouter
from .tls import TunnelCA

DEFAULT_IMAGE = os.environ.get("FLEET_TEST_IMAGE", "fleet-base:bookworm")


class FakeModal:
    """One fake Modal server. Not reusable after `stop()`."""

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_id: str = "ak-fleet-fake",
        token_secret: str = "as-fleet-fake",
        state_dir: str | Path | None = None,
        page_size: int = 10,
        enforce_timeouts: bool = True,
        keep_images: bool = False,
    ) -> None:
        self.image = image
        self.host = host
        self.port = port
        self.token_id = token_id
        self.token_secret = token_secret
        self.server_id = secrets.token_hex(4)
        self._own_state_dir = state_dir is None
        self.state_dir = Path(state_dir) if state_dir else Path(tempfile.mkdtemp(prefix="fake-modal-"))
        self._page_size = page_size
        self._enforce_timeouts = enforce_timeouts
        self._keep_images = keep_images
        self._ca: TunnelCA | None = None
        self._core: FakeModalCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.rpcs = RpcCounter()  # every RPC served, by name: `fake.rpcs.snapshot()`, `.reset()`

    # ---- public ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        assert self._ca is not None, "FakeModal not started"
        return self._ca.ca_path

    @property
    def core(self) -> FakeModalCore:
        assert self._core is not None, "FakeModal not started"
        return self._core

    def env(self) -> dict[str, str]:
        """Environment for a `modal` client (and fleet) to use this server."""
        return {
            "MODAL_SERVER_URL": self.url,
            "MODAL_TOKEN_ID": self.token_id,
            "MODAL_TOKEN_SECRET": self.token_secret,
            "MODAL_CONFIG_PATH": "/nonexistent",
            "MODAL_SANDBOX_V2": "1",
            "FLEET_UPSTREAM_CA": str(self.ca_path),
        }

    def start(self, timeout: float = 60.0) -> "FakeModal":
        self._ca = TunnelCA(self.state_dir, self.server_id)
        self._thread = threading.Thread(target=self._thread_main, name=f"fake-modal-{self.server_id}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"fake Modal did not start within {timeout:.0f}s")
        if self._start_error is not None:
            self._thread.join(timeout=30)
            self._remove_state_dir()
            raise self._start_error
        return self

    def stop(self, timeout: float = 120.0) -> None:
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        self._thread = None
        self._remove_state_dir()

    def __enter__(self) -> "FakeModal":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def call(self, fn: Any, timeout: float = 60.0) -> Any:
        """Run `fn(core)` on the server's loop (a coroutine function or a plain one)."""
        assert self._loop is not None

        async def run() -> Any:
            out = fn(self.core)
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def sandbox(self, sandbox_id: str) -> Sandbox:
        """The fake's record of a sandbox (container id, tunnels, recorded options)."""
        return self.call(lambda core: core.sandbox(sandbox_id))

    def container_id(self, sandbox_id: str) -> str | None:
        return self.sandbox(sandbox_id).container_id

    # ---- the server thread -------------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        assert self._ca is not None
        self._stopping = asyncio.Event()
        core: FakeModalCore | None = None
        server: Server | None = None
        try:
            core = FakeModalCore(
                server_id=self.server_id,
                default_image=self.image,
                ca=self._ca,
                page_size=self._page_size,
                enforce_timeouts=self._enforce_timeouts,
                keep_images=self._keep_images,
            )
            self._core = core
            await core.start()
            server = Server(
                [
                    Counted(FakeControlPlane(core, self.token_id, self.token_secret), self.rpcs),
                    Counted(FakeCommandRouter(core), self.rpcs),
                ]
            )
            await server.start(self.host, self.port)
            assert server._server is not None
            self.port = server._server.sockets[0].getsockname()[1]
            core.router_url = self.url
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self._start_error = e
            if server is not None:
                server.close()
            if core is not None:
                await core.shutdown()
            self._ready.set()
            return
        self._ready.set()
        await self._stopping.wait()
        server.close()
        await server.wait_closed()
        await core.shutdown()

    def _remove_state_dir(self) -> None:
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
