"""Agents on a remote engine, worked with as on the local one: a `build:` built on
that engine (once per engine), first messages, exec, logs, typed input, pull,
and destroy removing what is there. Real engine behind sshd, real containers;
every call over the provider's one SSH connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.labels import build_image
from reconciler.core.model import BuildSpec, ImageRef
from reconciler.core.plan import ImageBuild, ImageDestroy, MessageSend
from reconciler.load.buildctx import context_hash
from reconciler.providers.base import get_provider
from tests.conftest import BASE_IMAGE, wait_for
from tests.remote.remote_fleet import (
    apply, captured, cleanup_remote, destroy, key_of, plan_of, shared_fleet,
)
from tests.remote.helpers import ssh_children

pytestmark = pytest.mark.docker

ECHO = ("/bin/sh", "-c", "while read -r line; do echo \"got:$line\"; done")


def built_image(fleet: str, root: Path) -> ImageRef:
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nRUN echo built-remotely > /built.txt\n")
    digest = context_hash(ctx, "Dockerfile", {})
    return ImageRef(ref=build_image(fleet, digest), build=BuildSpec(context=ctx, context_hash=digest))


@pytest.fixture
def remote_fleet_name(remote_engine, fleet_name):
    yield fleet_name
    cleanup_remote(remote_engine, fleet_name)


def test_build_message_exec_logs_input_on_the_remote_engine(remote_engine, remote_fleet_name, tmp_path, docker_client):
    fleet, remote = remote_fleet_name, remote_engine
    app = tmp_path / "app"
    app.mkdir()
    (app / "hello.txt").write_text("hi\n")
    image = built_image(fleet, tmp_path)
    d = shared_fleet(fleet, remote, app, image=image, messages={"impl": "first hello"})
    d = d.model_copy(update={"agents": {**d.agents, "impl": d.agents["impl"].model_copy(update={"command": ECHO})}})

    _, plan = apply(d)
    builds = [a for a in plan.actions if isinstance(a, ImageBuild)]
    assert [(b.provider, b.name) for b in builds] == [(key_of(remote), image.ref)]
    assert any(isinstance(a, MessageSend) and a.provider == key_of(remote) for a in plan.actions)
    assert remote.docker().images.get(image.ref).labels["dev.fleet.project"] == fleet  # built there ...
    assert not docker_client.images.list(name=image.ref)  # ... not here

    observed, again = plan_of(d)
    assert again.empty, [(a.id, a.cause) for a in again.actions]  # no build, no upload, message delivered
    assert observed.engine_images[key_of(remote)] == (image.ref,)
    impl = next(a for a in observed.agents if a.name == "impl")
    provider = get_provider(impl.key)
    assert provider is get_provider(key_of(remote))

    def logs() -> str:
        return b"".join(provider.logs(fleet, impl)).decode(errors="replace")

    wait_for(lambda: "got:first hello" in logs(), timeout=20, what="the first message in the agent's output")

    # exec: output, stderr and the exit code come back over the SSH connection
    before = set(ssh_children())
    code, out = captured(provider.exec, fleet, impl, ["/bin/sh", "-c", "cat /built.txt hello.txt; pwd; exit 3"])
    assert code == 3 and out == "built-remotely\nhi\n/workspace\n", out
    code, out = captured(provider.exec, fleet, impl, ["/bin/sh", "-c", "printf %s \"$X\""], env={"X": "y z"},
                         workdir="/")
    assert (code, out) == (0, "y z")

    # typed input reaches the agent's terminal (what `fleet message` and attach send)
    provider.send_input(fleet, impl, b"second line\r")
    wait_for(lambda: "got:second line" in logs(), timeout=20, what="typed input in the agent's output")
    tail = b"".join(provider.logs(fleet, impl, tail=1)).decode()
    assert "got:second line" in tail
    assert set(ssh_children()) - before == set(), "a new ssh per call"

    plan = destroy(d)
    assert any(isinstance(a, ImageDestroy) and a.provider == key_of(remote) for a in plan.actions)
    client = remote.docker()
    assert not client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})
    assert not client.images.list(filters={"label": f"dev.fleet.project={fleet}"})


def test_one_build_two_engines_builds_once_on_each(remote_engine, remote_fleet_name, tmp_path, docker_client):
    from reconciler.core.model import DesiredAgent

    fleet, remote = remote_fleet_name, remote_engine
    app = tmp_path / "app"
    app.mkdir()
    image = built_image(fleet, tmp_path)
    local = DesiredAgent(name="here", image=image, command=("sleep", "infinity"))
    d = shared_fleet(fleet, remote, app, agents=("there",), image=image, extra=(local,))
    _, plan = apply(d)
    builds = sorted((b.id, b.provider) for b in plan.actions if isinstance(b, ImageBuild))
    assert builds == sorted([(f"image:{image.ref}:build", "docker"),
                             (f"image:{image.ref}@ssh://{remote.name}:build", key_of(remote))])
    assert docker_client.images.get(image.ref) and remote.docker().images.get(image.ref)
    assert plan_of(d)[1].empty
    destroy(d)
    assert not docker_client.images.list(filters={"label": f"dev.fleet.project={fleet}"})
    assert not remote.docker().images.list(filters={"label": f"dev.fleet.project={fleet}"})
