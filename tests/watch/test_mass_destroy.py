"""The watch loop's guard against a save that destroys most of the fleet (a save
of just `fleet: NAME`), `fleet stop` under a watcher, and what the log says."""

from __future__ import annotations

import pytest

from tests.conftest import Terminal, run_fleet, wait_for
from tests.watch.test_watch import agents, write

pytestmark = pytest.mark.docker


def three(fleet: str, image: str) -> str:
    return f"""
        fleet: {fleet}
        defaults: {{image: {image}}}
        agents:
          a: {{command: ["sleep", "infinity"]}}
          b: {{command: ["sleep", "infinity"]}}
          c: {{command: ["sleep", "infinity"]}}
        """


def test_a_mass_destroy_save_is_held_without_a_terminal(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", three(fleet_name, base_image))
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml")
    ids = {n: c.id for n, c in agents(docker_client, fleet_name).items()}
    assert set(ids) == {"a", "b", "c"}

    mark = w.mark()
    path.write_text(f"fleet: {fleet_name}\n")
    w.wait_for(r"held: this save would destroy 3 of the fleet's 3 agents", after=mark)
    assert "--allow-mass-destroy" in w.text(mark) and "- destroy" in w.text(mark)
    assert "destroyed agent" not in w.text(mark)

    # the previous spec stays in force: a stopped-by-hand agent is still healed
    agents(docker_client, fleet_name)["a"].stop(timeout=1)
    w.wait_for(r"started agent a", after=mark)
    assert {n: c.id for n, c in agents(docker_client, fleet_name).items()} == ids

    # a save destroying one of three is not held
    mark = w.mark()
    write(path, three(fleet_name, base_image).replace('c: {command: ["sleep", "infinity"]}', ""))
    w.wait_for(r"destroyed agent c", after=mark)
    assert "held:" not in w.text(mark)


def test_allow_mass_destroy_applies_it(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", three(fleet_name, base_image))
    w = watcher(path, "--allow-mass-destroy")
    w.wait_for(r"watching fleet\.yaml")
    mark = w.mark()
    path.write_text(f"fleet: {fleet_name}\n")
    w.wait_for(r"fleet \S+: 3 actions done", after=mark)
    assert agents(docker_client, fleet_name) == {} and "held:" not in w.text(mark)


def test_a_held_save_is_applied_once_confirmed_on_the_terminal(tmp_path, docker_client, base_image, fleet_name):
    path = write(tmp_path / "fleet.yaml", three(fleet_name, base_image))
    with Terminal("apply", "--watch", str(path), env={"COLUMNS": "200"}) as term:
        seen = term.read_until(b"Ctrl-C stops watching", timeout=90)
        assert b"Ctrl-C stops watching" in seen, seen.decode(errors="replace")
        wait_for(lambda: len(agents(docker_client, fleet_name)) == 3, what="three agents")
        path.write_text(f"fleet: {fleet_name}\n")
        seen = term.read_until(b"type yes and Enter", timeout=60)
        assert b"held: this save would destroy 3" in seen, seen.decode(errors="replace")
        assert len(agents(docker_client, fleet_name)) == 3
        term.write(b"yes\r")
        wait_for(lambda: agents(docker_client, fleet_name) == {}, timeout=60, what="the confirmed destroys")


def test_fleet_stop_under_a_watcher_stays_stopped(tmp_path, docker_client, base_image, fleet_name, watcher):
    path = write(tmp_path / "fleet.yaml", three(fleet_name, base_image))
    w = watcher(path, "--resync", "1")
    w.wait_for(r"watching fleet\.yaml")
    mark = w.mark()
    r = run_fleet("stop", "-f", str(path), "b")
    assert r.code == 0, r.text
    w.wait_for(r"agent b: running -> stopped \(fleet stop\)", after=mark)
    import time

    time.sleep(3)  # a few resyncs (1 s each) pass: none starts it
    c = agents(docker_client, fleet_name)["b"]
    c.reload()
    assert c.status == "exited", w.text(mark)
    assert "started agent b" not in w.text(mark)
    r = run_fleet("start", "-f", str(path), "b")
    assert r.code == 0, r.text
    w.wait_for(r"agent b: stopped \(fleet stop\) -> running", after=mark)
    assert "exited (143)" not in w.text(mark)  # never seen stopped without the record


def test_a_build_context_edit_is_named_as_such(tmp_path, docker_client, base_image, fleet_name, watcher):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app.txt\n")
    (ctx / "app.txt").write_text("one\n")
    path = write(
        tmp_path / "fleet.yaml",
        f"""
        fleet: {fleet_name}
        agents:
          web: {{build: {{context: ./ctx}}, command: ["sleep", "infinity"]}}
        """,
    )
    w = watcher(path)
    w.wait_for(r"watching fleet\.yaml", timeout=120)
    mark = w.mark()
    (ctx / "app.txt").write_text("two\n")
    w.wait_for(r"build context changed: ctx/app\.txt: Plan for", after=mark, timeout=60)
    w.wait_for(r"replaced agent web", after=mark, timeout=120)
    assert "fleet.yaml changed" not in w.text(mark)
    assert "route:" not in w.text()
