"""The fake Modal server, exercised only through the real `modal` SDK (and Docker to check
that what the SDK was told is what really happened)."""

from __future__ import annotations

import http.client
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.fakes.modal import FakeModal
from tests.fakes.modal.fixtures import terminate_app_sandboxes

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HOST_TAGS = {"dev.fleet.project": "fake-test", "dev.fleet.kind": "host"}


def wait_until(check: Any, timeout: float = 20.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="module")
def host_app(fake_modal: FakeModal, modal_client: Any) -> Iterator[Any]:
    import modal

    app = modal.App.lookup("fake-test-host", create_if_missing=True, client=modal_client)
    try:
        yield app
    finally:
        terminate_app_sandboxes(fake_modal, app.app_id)


@pytest.fixture(scope="module")
def host(host_app: Any, modal_client: Any) -> Any:
    """One sandbox shaped like a fleet shared host, used by several tests."""
    import modal

    return modal.Sandbox.create(
        app=host_app,
        name="auth-host",
        tags=HOST_TAGS,
        image=modal.Image.from_registry("python:3.12-slim"),
        timeout=3600,
        idle_timeout=600,
        workdir="/workspace",
        encrypted_ports=[3000],
        cpu=0.5,
        memory=512,
        region="us-east",
        client=modal_client,
    )


# ---- no containers needed -------------------------------------------------------------


def test_app_lookup_creates_once_and_missing_app_is_not_found(modal_client: Any) -> None:
    import modal

    first = modal.App.lookup("fake-test-lookup", create_if_missing=True, client=modal_client)
    again = modal.App.lookup("fake-test-lookup", create_if_missing=True, client=modal_client)
    assert first.app_id == again.app_id
    assert first.app_id.startswith("ap-")
    with pytest.raises(modal.exception.NotFoundError):
        modal.App.lookup("fake-test-never-created", client=modal_client)


def test_wrong_credentials_are_rejected(fake_modal: FakeModal, monkeypatch: pytest.MonkeyPatch) -> None:
    import modal

    monkeypatch.setenv("MODAL_SERVER_URL", fake_modal.url)
    client = modal.Client.from_credentials("ak-wrong", "as-wrong")
    try:
        with pytest.raises(modal.exception.AuthError):
            modal.App.lookup("fake-test-auth", create_if_missing=True, client=client)
    finally:
        client.close()


def test_rpcs_the_fake_lacks_answer_unimplemented(modal_client: Any) -> None:
    import modal

    with pytest.raises(modal.exception.UnimplementedError):
        modal.Secret.from_name("some-secret").hydrate(client=modal_client)


# ---- one shared host sandbox ----------------------------------------------------------


def test_sandbox_is_a_labelled_container_with_the_requested_shape(fake_modal: FakeModal, host: Any) -> None:
    from modal.sandbox._common import _is_v1_sandbox_id

    assert not _is_v1_sandbox_id(host.object_id)  # V2 mode
    record = fake_modal.sandbox(host.object_id)
    container = docker.from_env().containers.get(record.container_id)
    assert container.status == "running"
    assert container.labels["dev.fleet.test"] == "1"
    assert container.labels["dev.fleet.fake-modal"] == fake_modal.server_id
    assert container.attrs["Config"]["WorkingDir"] == "/workspace"
    assert container.attrs["HostConfig"]["Init"] is True
    assert fake_modal.image in container.image.tags  # a registry name maps to the local image
    # recorded, not enforced
    assert record.definition.resources.milli_cpu == 500
    assert record.definition.resources.memory_mb == 512
    assert list(record.definition.scheduler_placement.regions) == ["us-east"]
    assert record.idle_timeout_secs == 600


def test_exec_returns_output_and_exit_code(host: Any) -> None:
    p = host.exec("sh", "-c", "echo hi; echo oops >&2; pwd; exit 3")
    assert p.stdout.read() == "hi\n/workspace\n"
    assert p.stderr.read() == "oops\n"
    assert p.wait() == 3
    assert p.returncode == 3


def test_exec_with_stdin_env_and_workdir(host: Any) -> None:
    p = host.exec("sh", "-c", 'cat; echo "$GREETING from $(pwd)"', env={"GREETING": "hello"}, workdir="/tmp")
    p.stdin.write(b"line one\nline two\n")
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.stdout.read() == "line one\nline two\nhello from /tmp\n"
    assert p.wait() == 0


def test_exec_streams_output_as_it_is_written(host: Any) -> None:
    p = host.exec("sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done")
    assert list(p.stdout) == ["line 1\n", "line 2\n", "line 3\n"]
    assert p.wait() == 0


def test_exec_with_a_pty(host: Any) -> None:
    p = host.exec("sh", "-c", "tty", pty=True)
    assert p.stdout.read().startswith("/dev/pts/")
    assert p.wait() == 0


def test_two_execs_share_the_working_directory(host: Any) -> None:
    assert host.exec("sh", "-c", "echo shared > note.txt").wait() == 0
    p = host.exec("cat", "/workspace/note.txt")
    assert p.stdout.read() == "shared\n"
    assert p.wait() == 0


def test_a_server_started_by_exec_is_reachable_through_the_tls_tunnel(fake_modal: FakeModal, host: Any) -> None:
    tunnel = host.tunnels()[3000]
    assert tunnel.url.startswith("https://127.0.0.1:")
    assert (tunnel.unencrypted_host, tunnel.unencrypted_port) == ("", 0)
    start = host.exec(
        "sh",
        "-c",
        "mkdir -p /srv && echo 'hello through the tunnel' > /srv/index.html && "
        "nohup python3 -m http.server 3000 --directory /srv >/dev/null 2>&1 &",
    )
    assert start.wait() == 0
    ctx = ssl.create_default_context(cafile=str(fake_modal.ca_path))

    def fetch() -> bytes | None:
        try:
            with urllib.request.urlopen(tunnel.url + "/index.html", context=ctx, timeout=5) as r:
                return r.read()
        except (urllib.error.URLError, OSError, http.client.HTTPException):
            return None

    assert wait_until(fetch) == b"hello through the tunnel\n"
    # real TLS: without the fake's CA the certificate is not trusted
    with pytest.raises(urllib.error.URLError) as err:
        urllib.request.urlopen(tunnel.url, context=ssl.create_default_context(), timeout=5)
    assert isinstance(err.value.reason, ssl.SSLCertVerificationError)


def test_lookup_by_name_and_id(host: Any, modal_client: Any) -> None:
    import modal

    by_name = modal.Sandbox.from_name("fake-test-host", "auth-host", client=modal_client)
    assert by_name.object_id == host.object_id
    by_id = modal.Sandbox.from_id(host.object_id, client=modal_client)
    assert by_id.poll() is None  # still running
    with pytest.raises(modal.exception.NotFoundError):
        modal.Sandbox.from_name("fake-test-host", "no-such-host", client=modal_client)


def test_names_are_unique_per_app(host: Any, host_app: Any, modal_client: Any) -> None:
    import modal

    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Sandbox.create(app=host_app, name="auth-host", client=modal_client)


def test_set_tags_replaces_the_whole_set(host: Any, host_app: Any, modal_client: Any) -> None:
    import modal

    assert host.get_tags() == HOST_TAGS
    try:
        host.set_tags({"dev.fleet.project": "fake-test", "dev.fleet.agent.impl": "abc123"})
        assert host.get_tags() == {"dev.fleet.project": "fake-test", "dev.fleet.agent.impl": "abc123"}
        found = list(modal.Sandbox.list(app_id=host_app.app_id, tags={"dev.fleet.kind": "host"}, client=modal_client))
        assert found == []  # the old tag is gone
    finally:
        host.set_tags(HOST_TAGS)


def test_rpc_counts_show_what_observation_costs(fake_modal: FakeModal, host: Any, host_app: Any,
                                               modal_client: Any) -> None:
    import modal

    fake_modal.rpcs.reset()
    found = list(modal.Sandbox.list(app_id=host_app.app_id, tags={"dev.fleet.kind": "host"}, client=modal_client))
    assert [s.object_id for s in found] == [host.object_id]
    # the SDK reads pages until an empty one, and drops the tags the listing carried
    assert fake_modal.rpcs.snapshot() == {"SandboxListV2": 2}
    assert found[0].get_tags() == HOST_TAGS
    assert fake_modal.rpcs.snapshot() == {"SandboxListV2": 2, "SandboxTagsGetV2": 1}


# ---- more sandboxes -------------------------------------------------------------------


def test_list_filters_by_all_tags_pages_and_terminate_removes(
    fake_modal: FakeModal, modal_app: Any, modal_client: Any
) -> None:
    import modal

    made = [
        modal.Sandbox.create(app=modal_app, tags={"team": "a", "n": str(i)}, timeout=600, client=modal_client)
        for i in range(3)
    ]
    other = modal.Sandbox.create(app=modal_app, tags={"team": "b"}, timeout=600, client=modal_client)

    def listed(**tags: str) -> set[str]:
        return {s.object_id for s in modal.Sandbox.list(app_id=modal_app.app_id, tags=tags, client=modal_client)}

    # 3 matches over pages of 2: the client pages with before_timestamp until an empty page
    assert listed(team="a") == {s.object_id for s in made}
    assert listed(team="a", n="1") == {made[1].object_id}
    assert listed(team="b") == {other.object_id}
    assert listed() == {s.object_id for s in [*made, other]}

    victim = made[0]
    container_id = fake_modal.container_id(victim.object_id)
    victim.terminate()
    victim.wait(raise_on_termination=False)
    assert victim.returncode == 137
    assert listed(team="a") == {made[1].object_id, made[2].object_id}
    with pytest.raises(docker.errors.NotFound):
        docker.from_env().containers.get(container_id)
    with pytest.raises(modal.exception.NotFoundError):
        victim.exec("true")


def test_snapshot_filesystem_restores_into_a_new_sandbox(host: Any, modal_app: Any, modal_client: Any) -> None:
    import modal

    assert host.exec("sh", "-c", "echo 'work in progress' > /workspace/wip.txt").wait() == 0
    image = host.snapshot_filesystem()
    assert image.object_id.startswith("im-")
    restored = modal.Sandbox.create(
        app=modal_app, image=modal.Image.from_id(image.object_id, client=modal_client), client=modal_client
    )
    p = restored.exec("cat", "/workspace/wip.txt")
    assert p.stdout.read() == "work in progress\n"
    assert p.wait() == 0


def test_dockerfile_builds_layers_and_local_files_are_real(
    modal_app: Any, modal_client: Any, tmp_path: Path
) -> None:
    import modal

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text("copied\n")
    (ctx / "Dockerfile").write_text("FROM node:20\nRUN echo built > /built.txt\nCOPY hello.txt /hello.txt\n")
    ws = tmp_path / "ws"
    (ws / "bin").mkdir(parents=True)
    (ws / "bin" / "run.sh").write_text("echo uploaded\n")
    (ws / "bin" / "run.sh").chmod(0o755)
    image = (
        modal.Image.from_dockerfile(str(ctx / "Dockerfile"), context_dir=str(ctx))
        .env({"LAYER": "yes"})
        .add_local_dir(str(ws), "/workspace")
    )
    sb = modal.Sandbox.create(app=modal_app, image=image, workdir="/workspace", client=modal_client)
    p = sb.exec("sh", "-c", 'cat /built.txt /hello.txt; echo "$LAYER"; ./bin/run.sh')
    assert p.stdout.read() == "built\ncopied\nyes\nuploaded\n"
    assert p.wait() == 0


def test_a_failing_build_fails_the_create(modal_app: Any, modal_client: Any) -> None:
    import modal

    image = modal.Image.from_registry("node:20").run_commands("echo broken >&2; exit 3")
    with pytest.raises(modal.exception.ImageBuildError, match="broken"):
        modal.Sandbox.create(app=modal_app, image=image, client=modal_client)


def test_entrypoint_output_and_enforced_timeout(modal_app: Any, modal_client: Any) -> None:
    import modal

    sb = modal.Sandbox.create("sh", "-c", "echo started; sleep 600", app=modal_app, timeout=1, client=modal_client)
    with pytest.raises(modal.exception.SandboxTimeoutError):
        sb.wait()
    assert sb.returncode == 124
    assert sb.stdout.read() == "started\n"


# ---- from a shell ---------------------------------------------------------------------


def test_runs_from_a_shell_and_cleans_up_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    import modal

    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.modal", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        while len(env) < 6:
            line = proc.stdout.readline()
            assert line, f"fake exited early: {proc.stderr.read() if proc.poll() is not None else ''}"
            key, _, value = line.strip().removeprefix("export ").partition("=")
            env[key] = value
        assert set(env) >= {"MODAL_SERVER_URL", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_CONFIG_PATH"}
        assert Path(env["FLEET_UPSTREAM_CA"]).is_file()
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        client = modal.Client.from_credentials(env["MODAL_TOKEN_ID"], env["MODAL_TOKEN_SECRET"])
        try:
            app = modal.App.lookup("from-shell", create_if_missing=True, client=client)
            # An explicit image: the SDK's default image is a process-wide object, hydrated
            # once against the session's fake server, whose image id this server never saw.
            sb = modal.Sandbox.create(
                app=app, name="one", image=modal.Image.from_registry("debian:bookworm"), client=client
            )
            assert sb.exec("echo", "ok").stdout.read() == "ok\n"
        finally:
            client.close()
        dc = docker.from_env()
        mine = {"label": f"dev.fleet.fake-modal.sandbox={sb.object_id}"}
        assert len(dc.containers.list(filters=mine)) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert dc.containers.list(all=True, filters=mine) == []
        assert not Path(env["FLEET_UPSTREAM_CA"]).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
