"""The file watch behind `apply --watch` (real inotify, no Docker): in-place
writes and editors' rename-into-place saves of fleet.yaml are both seen, other
files in its directory are not, and build contexts are watched recursively."""

from __future__ import annotations

import os
import time

import pytest

from reconciler.watch.triggers import FileWatch, Trigger, Waker


def wait_file_trigger(waker: Waker, timeout: float = 10.0) -> list[Trigger]:
    deadline = time.monotonic() + timeout
    got: list[Trigger] = []
    while time.monotonic() < deadline and not got:
        got = [t for t in waker.wait(deadline - time.monotonic()) if t.source == "file"]
    return got


def quiet(waker: Waker, seconds: float = 0.5) -> bool:
    """True when no file trigger arrives for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if [t for t in waker.wait(deadline - time.monotonic()) if t.source == "file"]:
            return False
    return True


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: a\n")
    waker = Waker()
    watch = FileWatch(path, waker.poke)
    time.sleep(0.3)  # the watch thread registers its inotify watches
    yield path, waker, watch
    watch.close()
    waker.close()


def test_in_place_and_rename_saves_are_seen_other_files_are_not(setup, tmp_path):
    path, waker, _ = setup
    path.write_text("fleet: b\n")
    assert wait_file_trigger(waker), "an in-place write was not seen"
    assert quiet(waker)

    tmp = tmp_path / ".fleet.yaml.swp123"
    tmp.write_text("fleet: c\n")
    os.replace(tmp, path)  # how many editors save
    got = wait_file_trigger(waker)
    assert got and "fleet.yaml" in got[0].detail

    (tmp_path / "notes.txt").write_text("hello\n")
    assert quiet(waker), "a neighbouring file must not wake the loop"


def test_build_contexts_are_watched_recursively_and_retargeted(setup, tmp_path):
    _, waker, watch = setup
    ctx = tmp_path / "img"
    (ctx / "src").mkdir(parents=True)
    watch.update([ctx])
    time.sleep(0.3)
    (ctx / "src" / "app.py").write_text("print(1)\n")
    assert wait_file_trigger(waker), "a change inside the build context was not seen"

    watch.update([])  # the file no longer names a build
    time.sleep(0.3)
    assert quiet(waker, 0.3)
    (ctx / "src" / "app.py").write_text("print(2)\n")
    assert quiet(waker)


def test_docker_event_lines():
    from reconciler.providers.docker.events import describe

    attrs = {"dev.fleet.kind": "agent", "dev.fleet.agent": "a1", "exitCode": "3", "name": "fleet_x_a1"}
    assert describe({"Action": "die", "Actor": {"Attributes": attrs}}) == "agent a1 exited 3"
    assert describe({"status": "oom", "Actor": {"Attributes": {"name": "c"}}}) == "container c out of memory"
    assert describe({"Action": "start", "Actor": {"Attributes": attrs}}) is None  # not a change that needs a re-plan


@pytest.mark.docker
def test_provider_events_wake_the_loop(fleet_name, base_image, docker_client):
    """A fleet container exiting reaches the loop as a "docker" trigger, through
    the engine and the provider's declared "events" capability."""
    from reconciler.watch.triggers import ProviderEvents

    waker = Waker()
    events = ProviderEvents(fleet_name, waker.poke)
    try:
        time.sleep(0.5)  # the stream is open
        labels = {"dev.fleet.project": fleet_name, "dev.fleet.kind": "agent", "dev.fleet.agent": "quick"}
        docker_client.containers.run(base_image, ["sh", "-c", "exit 3"], labels=labels, detach=True)
        deadline = time.monotonic() + 15
        seen: list[Trigger] = []
        while time.monotonic() < deadline and Trigger("docker", "agent quick exited 3") not in seen:
            seen += waker.wait(deadline - time.monotonic())
        assert Trigger("docker", "agent quick exited 3") in seen, seen
    finally:
        events.close()
        waker.close()
