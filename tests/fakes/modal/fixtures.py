"""Pytest fixtures for tests that drive the real `modal` SDK against `FakeModal`.

Use them from a conftest with `from tests.fakes.modal.fixtures import *  # noqa: F401,F403`
(or list `tests.fakes.modal.fixtures` in the root conftest's `pytest_plugins`).

- `fake_modal` (session): one server, stopped (and its containers removed) at the end.
  Pages of `Sandbox.list` hold 2 sandboxes, so the client's paging is always exercised.
- `modal_client` (session): a `modal.Client` for it, made with `from_credentials`; it
  keeps the server URL it was made with, so it works without the environment below.
- `modal_env` (function): the `MODAL_*` variables (and `FLEET_UPSTREAM_CA`) set for one
  test, for code that calls `modal.Client.from_env()` or starts subprocesses.
- `modal_app` (function): a fresh app; its sandboxes are terminated after the test.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

# modal reads its config file path when first imported: never read a developer's ~/.modal.toml.
os.environ.setdefault("MODAL_CONFIG_PATH", "/nonexistent")

from .server import DEFAULT_IMAGE, FakeModal  # noqa: E402

__all__ = ["fake_modal", "modal_client", "modal_env", "modal_app"]


def _docker_problem(image: str) -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(image)
        client.close()
    except Exception as e:  # noqa: BLE001 - any failure means: cannot run these tests
        return f"fake Modal needs Docker and the local image {image!r}: {e}"
    return None


@pytest.fixture(scope="session")
def fake_modal() -> Iterator[FakeModal]:
    problem = _docker_problem(DEFAULT_IMAGE)
    if problem:
        pytest.fail(f"{problem}; run `make engine base-image` (make test does it)")
    fake = FakeModal(DEFAULT_IMAGE, page_size=2).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def modal_client(fake_modal: FakeModal) -> Iterator[Any]:
    import modal

    with pytest.MonkeyPatch.context() as mp:
        for key, value in fake_modal.env().items():
            mp.setenv(key, value)
        client = modal.Client.from_credentials(fake_modal.token_id, fake_modal.token_secret)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def modal_env(fake_modal: FakeModal, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = fake_modal.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def modal_app(fake_modal: FakeModal, modal_client: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    import modal

    name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:48] + "-" + secrets.token_hex(3)
    app = modal.App.lookup(name, create_if_missing=True, client=modal_client)
    try:
        yield app
    finally:
        terminate_app_sandboxes(fake_modal, app.app_id)


def terminate_app_sandboxes(fake: FakeModal, app_id: str) -> None:
    """Terminate (and so remove the containers of) every running sandbox of an app."""

    async def run(core: Any) -> None:
        for sb in list(core.sandboxes.values()):
            if sb.app_id == app_id and sb.result is None:
                await core.terminate(sb)

    fake.call(run)
