"""Working with running agents on the real engine: logs, exec, attach, message,
enabled: false, and per-agent workspaces (copy, worktree)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Terminal, free_port, run_fleet
from tests.e2e.test_docker_apply import containers, exec_out, wait_for, write

pytestmark = pytest.mark.docker

READER = "while read line; do echo \"got: $line\"; done"


def got_lines(client, fleet: str, agent: str) -> list[str]:
    c = containers(client, fleet)[f"agent:{agent}"]
    out = c.logs().decode(errors="replace").replace("\r", "")
    return [ln[len("got: "):] for ln in out.splitlines() if ln.startswith("got: ")]


def test_first_message_then_later_messages_reach_a_read_loop(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          reader:
            command: '{READER}'
            message: "Implement dark mode"
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert "first message" in r.out
    wait_for(lambda: got_lines(docker_client, fleet_name, "reader") == ["Implement dark mode"], what="first message")

    # a no-op apply does not type it again
    r = run_fleet("apply", str(path))
    assert "up to date" in r.out, r.text
    time.sleep(0.5)
    assert got_lines(docker_client, fleet_name, "reader") == ["Implement dark mode"]

    # fleet message: multi-line and long texts arrive whole, in order
    long_line = "x" * 3000
    r = run_fleet("message", "-f", str(path), "reader", "first line\nsecond line")
    assert r.code == 0, r.text
    r = run_fleet("message", "-f", str(path), "reader", "-", input=long_line + "\n")
    assert r.code == 0, r.text
    expected = ["Implement dark mode", "first line", "second line", long_line]
    wait_for(lambda: got_lines(docker_client, fleet_name, "reader") == expected, what="later messages")

    # logs show the agent's output
    r = run_fleet("logs", "-f", str(path), "reader", "--tail", "1")
    assert r.code == 0 and f"got: {long_line}" in r.out, r.text

    # after a replace (spec changed), the new container gets the first message again
    path.write_text(path.read_text().replace("message:", "env: {V: '2'}\n    message:"))
    r = run_fleet("apply", str(path))
    assert r.code == 0 and "replace" in r.out and "first message" in r.out, r.text
    wait_for(lambda: got_lines(docker_client, fleet_name, "reader") == ["Implement dark mode"], what="message after replace")


def test_message_to_a_stopped_agent_fails_clearly(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          reader: {{command: '{READER}', restart: never}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    containers(docker_client, fleet_name)["agent:reader"].stop(timeout=1)
    r = run_fleet("message", "-f", str(path), "reader", "hello")
    assert r.code == 1
    assert "agent reader" in r.err and "is not running" in r.err and "message not done" in r.err, r.err
    assert "Traceback" not in r.text
    r = run_fleet("message", "-f", str(path), "raeder", "hello")
    assert r.code == 1 and "no agent 'raeder'" in r.err and "did you mean 'reader'" in r.err, r.err


def test_exec_exit_code_workdir_env_and_stdin(tmp_path, docker_client, base_image, fleet_name):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.txt").write_text("hi\n")
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          worker: {{command: [sleep, infinity], workspace: ./ws}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    r = run_fleet("exec", "-f", str(path), "worker", "--", "sh", "-c", "pwd; cat hello.txt; echo oops >&2; exit 7")
    assert r.code == 7
    assert r.out.splitlines() == ["/workspace", "hi"] and r.err.strip() == "oops"
    r = run_fleet("exec", "-f", str(path), "-w", "/tmp", "-e", "GREETING=hello", "worker", "--", "sh", "-c", 'pwd; echo "$GREETING"')
    assert r.code == 0 and r.out.splitlines() == ["/tmp", "hello"], r.text
    r = run_fleet("exec", "-i", "-f", str(path), "worker", "--", "wc", "-l", input="a\nb\nc\n")
    assert r.code == 0 and r.out.strip() == "3", r.text
    r = run_fleet("exec", "-f", str(path), "nobody", "--", "true")
    assert r.code == 1 and "no agent 'nobody'" in r.err and "(agents: worker)" in r.err


def test_attach_and_detach_leaves_the_agent_running(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          reader: {{command: '{READER}'}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    with Terminal("attach", "-f", str(path), "reader") as term:
        assert b"attached to reader" in term.read_until(b"attached to reader")
        time.sleep(0.3)
        term.write(b"typed at the terminal\r")
        assert b"got: typed at the terminal" in term.read_until(b"got: typed at the terminal")
        term.write(b"\x10\x11")  # ctrl-p ctrl-q
        assert b"detached from reader" in term.read_until(b"detached from reader")
        assert term.exit_code() == 0
    c = containers(docker_client, fleet_name)["agent:reader"]
    assert c.status == "running"


def test_enabled_false_stops_one_agent_and_leaves_its_neighbour(tmp_path, docker_client, base_image, fleet_name):
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        proxy: {{port: {free_port()}}}
        defaults: {{image: {base_image}}}
        hosts:
          pod: {{}}
        agents:
          a: {{host: pod, command: [sleep, infinity], ports: {{web: 3000}}}}
          b: {{host: pod, command: [sleep, infinity], ports: {{api: 4000}}}}
          solo: {{command: [sleep, infinity]}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    before = {k: c.id for k, c in containers(docker_client, fleet_name).items()}
    text = path.read_text()
    text = text.replace("b: {host: pod,", "b: {enabled: false, host: pod,").replace("solo: {command", "solo: {enabled: false, command")
    path.write_text(text)
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert "stop" in r.out and "enabled: false" in r.out
    after = containers(docker_client, fleet_name)
    assert {k: c.id for k, c in after.items()} == before  # nothing replaced, host untouched
    assert after["agent:b"].status == "exited" and after["agent:solo"].status == "exited"
    assert after["agent:a"].status == "running" and after["host:pod"].status == "running"
    assert "up to date" in run_fleet("apply", str(path)).out
    r = run_fleet("status", str(path), "-o", "json")
    import json

    states = {row["agent"]: (row["state"], row["enabled"]) for row in json.loads(r.out)["agents"]}
    assert states == {"a": ("running", True), "b": ("exited", False), "solo": ("exited", False)}, states
    assert "disabled" in run_fleet("status", str(path)).out
    # enabling again starts the same containers
    path.write_text(text.replace("enabled: false, ", ""))
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    again = containers(docker_client, fleet_name)
    assert {k: c.id for k, c in again.items()} == before
    assert all(c.status == "running" for c in again.values())


def test_copy_workspaces_keep_agents_apart(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    src = tmp_path / "app"
    src.mkdir()
    (src / "index.txt").write_text("original\n")
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          one: {{command: [sleep, infinity], workspace: {{path: ./app, mode: copy}}}}
          two: {{command: [sleep, infinity], workspace: {{path: ./app, mode: copy}}}}
        """,
    )
    assert run_fleet("apply", str(path)).code == 0
    cs = containers(docker_client, fleet_name)
    exec_out(cs["agent:one"], "echo by-one > /workspace/index.txt")
    assert exec_out(cs["agent:two"], "cat /workspace/index.txt").strip() == "original"
    assert (src / "index.txt").read_text() == "original\n"
    copy = fleet_home / "workspaces" / fleet_name / "one" / "index.txt"
    assert copy.read_text() == "by-one\n"
    # removing an agent keeps its copy (work may be there) and says where
    path.write_text(path.read_text().split("  two:")[0])
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    assert f"kept workspace of two at {fleet_home / 'workspaces' / fleet_name / 'two'}" in r.out
    assert (fleet_home / "workspaces" / fleet_name / "two").is_dir()
    r = run_fleet("destroy", "--yes", "--purge-workspaces", str(path))
    assert r.code == 0, r.text
    assert "kept workspace" not in r.out and "removed workspace" in r.out, r.out  # the truth, once
    assert not (fleet_home / "workspaces" / fleet_name).exists() or not any((fleet_home / "workspaces" / fleet_name).iterdir())


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_worktree_agent_works_on_its_own_branch_and_work_survives_destroy(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("hello\n")
    _git(repo, "add", "README")
    _git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    path = write(
        tmp_path,
        f"""
        fleet: {fleet_name}
        defaults: {{image: {base_image}}}
        agents:
          feature: {{command: [sleep, infinity], workspace: {{path: ./repo, mode: worktree}}}}
          other: {{command: [sleep, infinity], workspace: {{path: ./repo, mode: worktree}}}}
        """,
    )
    r = run_fleet("apply", str(path))
    assert r.code == 0, r.text
    c = containers(docker_client, fleet_name)["agent:feature"]
    assert exec_out(c, "cd /workspace && git rev-parse --abbrev-ref HEAD").strip() == "fleet/feature"
    exec_out(c, "cd /workspace && echo work > feature.txt && git add feature.txt && "
                "git -c user.email=a@a -c user.name=agent commit -qm 'agent work'")
    assert _git(repo, "log", "--format=%s", "-1", "fleet/feature") == "agent work"
    assert not (repo / "feature.txt").exists()  # main checkout untouched
    # the other agent does not see it
    o = containers(docker_client, fleet_name)["agent:other"]
    assert o.exec_run(["test", "-e", "/workspace/feature.txt"])[0] != 0

    r = run_fleet("destroy", "--yes", str(path))
    assert r.code == 0, r.text
    wt = fleet_home / "workspaces" / fleet_name / "feature"
    assert f"kept workspace of feature at {wt}: branch fleet/feature has 1 commit no other branch holds" in r.out
    assert (wt / "feature.txt").read_text() == "work\n"
    assert _git(repo, "log", "--format=%s", "-1", "fleet/feature") == "agent work"
    # the clean one was removed, its branch too
    assert "removed clean worktree of other" in r.out
    assert not (fleet_home / "workspaces" / fleet_name / "other").exists()


def test_worktree_needs_a_git_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    path = write(
        tmp_path,
        """
        fleet: wt
        agents:
          a: {image: x, workspace: {path: ./plain, mode: worktree}}
        """,
    )
    r = run_fleet("validate", str(path))
    assert r.code == 1
    assert "agents.a.workspace.mode" in r.err and "needs a git repository" in r.err, r.err
