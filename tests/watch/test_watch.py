"""`fleet apply --watch` end to end on the real engine, the watcher run as a
subprocess (plain output, read line by line). No timing assertions: every wait
is bounded, and what is checked is what happened, in which order."""

from __future__ import annotations

import functools
import json
import json
import signal
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cleanup_fleet, run_fleet, wait_for

pytestmark = pytest.mark.docker


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def spec(fleet: str, image: str, tz: str = "UTC", extra: str = "") -> str:
    return f"""
        fleet: {fleet}
        defaults:
          image: {image}
        agents:
          web:
            command: ["sleep", "infinity"]
            env: {{TZ: {tz}}}
        {extra}"""


def agents(client, fleet: str) -> dict[str, object]:
    """agent name -> container; fails on duplicates."""
    out: dict[str, object] = {}
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        name = c.labels.get("dev.fleet.agent")
        if name:
            assert name not in out, f"two containers for agent {name}"
            out[name] = c
    return out


wait_until = functools.partial(wait_for, timeout=60.0)


def running(client, fleet: str, name: str, not_id: str | None = None):
    """The agent's container when it runs (and is not `not_id`), else None."""
    c = agents(client, fleet).get(name)
    if c is None or c.id == not_id:
        return None
    c.reload()
    return c if c.status == "running" else None


def test_an_edit_is_applied_and_destroys_are_shown_first(tmp_path, docker_client, base_image, fleet_name, watcher,
                                                         fleet_home):
    extra = """  worker:
            command: ["sleep", "infinity"]"""
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image, extra=extra))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml for fleet " + fleet_name)
    # a pass applies through the pipeline, with its bookkeeping (the providers the fleet uses)
    assert json.loads((fleet_home / "fleets" / f"{fleet_name}.json").read_text()) == {"providers": ["docker"]}
    before = agents(docker_client, fleet_name)
    assert set(before) == {"web", "worker"}
    web_id = before["web"].id

    mark = w.mark()
    write(path, spec(fleet_name, base_image, tz="Europe/Paris"))  # env edit, and worker removed
    w.wait_for(r"fleet\.yaml changed: Plan for", after=mark)
    done = w.wait_for(r"destroyed agent worker", after=mark)
    shown = w.wait_for(r"- destroy\s+agent worker\s+not in fleet\.yaml", after=mark)
    assert shown < done, "the destroy must be printed before it happens"
    w.wait_for(r"replaced agent web", after=mark)
    web = wait_until(lambda: running(docker_client, fleet_name, "web", not_id=web_id), what="the new web")
    assert "TZ=Europe/Paris" in web.attrs["Config"]["Env"]
    assert set(agents(docker_client, fleet_name)) == {"web"}


def test_a_pass_applies_through_the_pipeline_with_its_bookkeeping(tmp_path, docker_client, base_image, fleet_name,
                                                                 watcher, fleet_home):
    """The providers fleet.yaml's hosts name are recorded before a pass creates
    anything (so they are observed, hence cleaned up, later): `fleet apply`'s
    bookkeeping, which the watch loop used to skip."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"fleet: {fleet_name}\ndefaults: {{image: {base_image}}}\nhosts: {{box: {{}}}}\n"
        "agents:\n  web: {host: box, command: [sleep, infinity]}\n"
    )
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml for fleet " + fleet_name)
    assert running(docker_client, fleet_name, "web") is not None
    assert json.loads((fleet_home / "fleets" / f"{fleet_name}.json").read_text()) == {"providers": ["docker"]}


def test_bad_saves_change_nothing_then_a_good_save_applies(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    web_id = agents(docker_client, fleet_name)["web"].id
    good = path.read_text()

    mark = w.mark()
    path.write_text("")  # an editor truncating before it writes
    w.wait_for(r"fleet\.yaml:1:1: file is empty", after=mark)
    w.wait_for(r"nothing changed; still running the last good spec", after=mark)

    mark = w.mark()
    cut = good.index("TZ")
    path.write_text(good[:cut])  # a save cut short inside a flow mapping
    line = good[:cut].count("\n") + 1
    w.wait_for(rf"fleet\.yaml:\d+:\d+: .*", after=mark)
    w.wait_for(r"nothing changed", after=mark)
    assert any(f"fleet.yaml:{n}:" in w.text(mark) for n in (line, line + 1)), w.text(mark)

    mark = w.mark()
    path.write_text(good.replace("agents:", "agents: [oops"))
    w.wait_for(r"fleet\.yaml:\d+:\d+: YAML syntax error", after=mark)
    w.wait_for(r"nothing changed", after=mark)

    assert agents(docker_client, fleet_name)["web"].id == web_id
    assert "Plan for" not in w.text(mark)

    mark = w.mark()
    write(path, spec(fleet_name, base_image, tz="Asia/Tokyo"))
    w.wait_for(r"replaced agent web", after=mark)
    web = wait_until(lambda: running(docker_client, fleet_name, "web", not_id=web_id), what="the new web")
    assert "TZ=Asia/Tokyo" in web.attrs["Config"]["Env"]


def test_a_container_removed_by_hand_comes_back(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    old = agents(docker_client, fleet_name)["web"]
    mark = w.mark()
    old.remove(force=True)
    w.wait_for(r"created agent web", after=mark)
    wait_until(lambda: running(docker_client, fleet_name, "web", not_id=old.id), what="web to come back")
    assert "no container" in w.text(mark)


def test_exited_agents_follow_their_restart_policy(tmp_path, docker_client, base_image, fleet_name, watcher):
    """always and on-failure: Docker's restart policy brings a crashed agent
    back, and the watcher starts what Docker will not (an agent stopped by
    hand); never: an agent that exited stays exited, as `fleet apply` would
    leave it."""
    extra = """  crashy:
            command: "sleep 2; exit 3"
            restart: on-failure
          oneshot:
            command: "sleep 2; exit 3"
            restart: never"""
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image, extra=extra))
    w = watcher(path)
    started = w.wait_for(r"watching fleet\.yaml")

    def state(name: str) -> dict:
        c = agents(docker_client, fleet_name)[name]
        c.reload()
        return {"status": c.status, "exit": c.attrs["State"]["ExitCode"], "restarts": c.attrs["RestartCount"],
                "started": c.attrs["State"]["StartedAt"], "id": c.id}

    wait_until(lambda: state("oneshot")["status"] == "exited", what="oneshot to exit")
    wait_until(lambda: state("crashy")["restarts"] >= 1, what="crashy to be restarted")
    oneshot = state("oneshot")
    assert oneshot["exit"] == 3

    mark = w.mark()
    agents(docker_client, fleet_name)["web"].stop(timeout=5)  # Docker does not restart what a person stopped
    w.wait_for(r"started agent web", after=mark)
    wait_until(lambda: state("web")["status"] == "running", what="web to run again")

    after = state("oneshot")
    assert after["status"] == "exited" and after["exit"] == 3
    assert after["started"] == oneshot["started"] and after["restarts"] == 0 and after["id"] == oneshot["id"]
    since_start = w.text(started).splitlines()
    assert not [line for line in since_start if "agent oneshot" in line and ("start " in line or "create " in line)]


def test_sigint_exits_0_and_leaves_agents_running(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    web_id = agents(docker_client, fleet_name)["web"].id
    w.send(signal.SIGINT)
    assert w.wait_exit(60) == 0, w.text()
    assert "stopped watching (SIGINT)" in w.text()
    assert running(docker_client, fleet_name, "web") is not None
    assert agents(docker_client, fleet_name)["web"].id == web_id
    r = run_fleet("apply", str(path), timeout=60)  # the lock is free again
    assert r.code == 0 and "up to date" in r.out, r.text


def test_a_second_watcher_is_refused_naming_the_holder(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    r = run_fleet("apply", "--watch", str(path), timeout=60)
    assert r.code == 1, r.text
    assert f"pid {w.pid}" in r.err and "locked" in r.err, r.text
    assert "Traceback" not in r.text
    w.send(signal.SIGTERM)
    assert w.wait_exit(60) == 0, w.text()
    assert running(docker_client, fleet_name, "web") is not None


def test_a_changed_fleet_name_is_refused(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    web_id = agents(docker_client, fleet_name)["web"].id
    other = fleet_name + "x"
    try:
        mark = w.mark()
        write(path, spec(other, base_image))
        w.wait_for(rf"names fleet '{other}', but this watcher runs fleet '{fleet_name}': refusing", after=mark)
        assert agents(docker_client, other) == {}
        assert agents(docker_client, fleet_name)["web"].id == web_id
        mark = w.mark()  # still watching the old fleet
        write(path, spec(fleet_name, base_image, tz="Europe/Oslo"))
        w.wait_for(r"replaced agent web", after=mark)
    finally:
        cleanup_fleet(docker_client, other)


def test_a_failing_action_backs_off_without_blocking_the_rest(tmp_path, docker_client, base_image, fleet_name, watcher):
    squatter = docker_client.containers.run(
        base_image, ["sleep", "infinity"], name=f"fleet_{fleet_name}_bad", labels={"dev.fleet.test": "1"}, detach=True
    )
    try:
        extra = """  bad:
            command: ["sleep", "infinity"]"""
        path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image, extra=extra))
        w = watcher(path)
        w.wait_for(r"failed to create agent bad: .*is taken by container.*; retrying in 1s")
        w.wait_for(r"failed to create agent bad: .*; retrying in 2s")
        web = running(docker_client, fleet_name, "web")
        assert web is not None  # the rest went on

        mark = w.mark()  # a spec change starts the backoff afresh
        write(path, spec(fleet_name, base_image, extra=extra.replace('["sleep", "infinity"]', '["sleep", "99999"]')))
        w.wait_for(r"fleet\.yaml changed: Plan for", after=mark)
        w.wait_for(r"failed to create agent bad: .*; retrying in 1s", after=mark)

        mark = w.mark()
        squatter.remove(force=True)
        w.wait_for(r"created agent bad", after=mark)
        wait_until(lambda: running(docker_client, fleet_name, "bad"), what="bad to run")
        assert agents(docker_client, fleet_name)["web"].id == web.id
    finally:
        try:
            squatter.remove(force=True)
        except Exception:
            pass


def test_down_on_exit_destroys_the_fleet(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", spec(fleet_name, base_image))
    w = watcher(path, "--down-on-exit", "--resync", "5")
    w.wait_for(r"watching fleet\.yaml .*resync 5s")
    assert running(docker_client, fleet_name, "web") is not None
    w.send(signal.SIGINT)
    assert w.wait_exit(60) == 0, w.text()
    assert f"destroying fleet {fleet_name}" in w.text()
    assert agents(docker_client, fleet_name) == {}


def test_a_change_in_a_build_context_rebuilds_and_replaces(tmp_path, docker_client, base_image, fleet_name, watcher):
    ctx = tmp_path / "img"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY hello.txt /hello.txt\n")
    (ctx / "hello.txt").write_text("one\n")
    path = write(tmp_path / "fleet.yaml", f"""
        fleet: {fleet_name}
        agents:
          web:
            build: {{context: ./img}}
            command: ["sleep", "infinity"]
        """)
    try:
        w = watcher(path)
        w.wait_for(r"watching fleet\.yaml", timeout=120)
        old = agents(docker_client, fleet_name)["web"]
        assert old.exec_run(["cat", "/hello.txt"]).output == b"one\n"
        mark = w.mark()
        (ctx / "hello.txt").write_text("two\n")
        w.wait_for(r"replace\s+agent web\s+spec changed: image", after=mark, timeout=60)
        w.wait_for(r"replaced agent web", after=mark, timeout=120)
        new = wait_until(lambda: running(docker_client, fleet_name, "web", not_id=old.id), what="the rebuilt web")
        assert new.exec_run(["cat", "/hello.txt"]).output == b"two\n"
    finally:
        for img in docker_client.images.list(filters={"label": f"dev.fleet.project={fleet_name}"}):
            try:
                docker_client.images.remove(img.id, force=True)
            except Exception:
                pass
