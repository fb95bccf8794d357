"""End to end through the `fleet` CLI: a shared host on the remote engine
(`engine: ssh://NAME`) with two agents, and one local agent. The workspace is
uploaded there once and shared; exec, logs, message, attach and pull work on
the remote agents as on the local one; a no-op apply is up to date; destroy
--purge-workspaces cleans both engines."""

from __future__ import annotations

import os
import textwrap
import time

import pytest

from tests.conftest import Terminal, free_port, run_fleet, wait_for
from tests.remote.remote_fleet import cleanup_remote

pytestmark = pytest.mark.docker

READER = "while read -r line; do echo \"got: $line\"; done"


@pytest.fixture
def remote_fleet_name(remote_engine, fleet_name):
    yield fleet_name
    cleanup_remote(remote_engine, fleet_name)


def test_remote_shared_host_through_the_cli(remote_engine, remote_fleet_name, base_image, docker_client, tmp_path):
    fleet, remote = remote_fleet_name, remote_engine
    app = tmp_path / "my-app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "main.py").write_text("print('hi')\n")
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(f"""
        fleet: {fleet}
        proxy: {{port: {free_port()}}}
        hosts:
          big-box:
            engine: ssh://{remote.name}
            image: {base_image}
            workspace: ./my-app
        agents:
          impl:
            host: big-box
            command: '{READER}'
            message: "first hello"
          test:
            host: big-box
            command: [sleep, infinity]
          here:
            image: {base_image}
            command: [sleep, infinity]
        """))
    f = ("-f", str(path))
    volume = f"fleet_{fleet}_host_big-box_workspace"

    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    assert "upload   workspace big-box" in r.out and f"copied to volume {volume} there" in r.out, r.out
    client = remote.docker()
    on_remote = {c.name for c in client.containers.list(filters={"label": f"dev.fleet.project={fleet}"})}
    assert on_remote == {f"fleet_{fleet}_host_big-box", f"fleet_{fleet}_impl", f"fleet_{fleet}_test"}
    here = {c.name for c in docker_client.containers.list(filters={"label": f"dev.fleet.project={fleet}"})}
    assert here == {f"fleet_{fleet}_here"}

    # the workspace is there and shared: one agent writes, the other reads (fleet exec on both)
    r = run_fleet("exec", *f, "impl", "cat src/main.py && echo from-impl > /workspace/note.txt")
    assert r.code == 0 and r.out == "print('hi')\n", r.text
    r = run_fleet("exec", *f, "test", "--", "cat", "/workspace/note.txt")
    assert r.code == 0 and r.out == "from-impl\n", r.text
    r = run_fleet("exec", *f, "test", "echo oops >&2; exit 7")
    assert r.code == 7 and "oops" in r.err, r.text
    r = run_fleet("exec", *f, "-i", "test", "--", "sh", "-c", "cat > /workspace/fed.txt", input="fed through stdin\n")
    assert r.code == 0, r.text
    r = run_fleet("exec", *f, "impl", "cat /workspace/fed.txt")
    assert r.out == "fed through stdin\n", r.text

    # first message, then fleet message and logs
    impl = client.containers.get(f"fleet_{fleet}_impl")
    wait_for(lambda: b"got: first hello" in impl.logs(), timeout=30, what="the first message")
    r = run_fleet("message", *f, "impl", "second message")
    assert r.code == 0, r.text
    wait_for(lambda: b"got: second message" in impl.logs(), timeout=30, what="fleet message")
    r = run_fleet("logs", *f, "impl", "--tail", "1")
    assert r.code == 0 and "got: second message" in r.out and "first hello" not in r.out, r.text

    # attach to the remote agent's terminal, type, detach
    with Terminal("attach", *f, "--detach-keys", "ctrl-x,q", "impl") as term:
        seen = term.read_until(b"got: second message")
        assert b"got: second message" in seen, seen  # the replay of its recent output
        time.sleep(0.3)
        term.write(b"typed remotely\r")
        assert b"got: typed remotely" in term.read_until(b"got: typed remotely")
        term.write(b"\x18q")
        seen = term.read_until(b"keeps running")
        assert b"detached from impl" in seen, seen
        assert term.exit_code() == 0

    # exec -it: a shell on a terminal, its exit code back
    with Terminal("exec", *f, "-i", "-t", "test", "--", "sh") as term:
        assert b"# " in term.read_until(b"# ")  # sh's prompt: the terminal is raw, typing reaches it
        term.write(b"echo $((6*7))x\r")
        assert b"42x" in term.read_until(b"42x")
        term.write(b"exit 3\r")
        assert term.exit_code() == 3

    # a second apply is up to date: no upload again, the agents' files stay
    (app / "src" / "main.py").write_text("changed here\n")
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and "up to date" in r.out and "upload" not in r.out, r.text
    r = run_fleet("exec", *f, "test", "cat /workspace/note.txt /workspace/src/main.py")
    assert r.out == "from-impl\nprint('hi')\n", r.text

    # fleet pull brings the remote workspace back
    dest = tmp_path / "pulled"
    r = run_fleet("pull", *f, "test", str(dest))
    assert r.code == 0, r.text
    assert (dest / "note.txt").read_text() == "from-impl\n"
    assert (dest / "src" / "main.py").read_text() == "print('hi')\n"
    assert (dest / "fed.txt").read_text() == "fed through stdin\n"

    # destroy cleans both engines; --purge-workspaces takes the remote volume
    r = run_fleet("destroy", "--yes", "--purge-workspaces", str(path))
    assert r.code == 0, r.text
    assert "purge" in r.out and volume in r.out, r.out
    assert not client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})
    assert not docker_client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"})
    assert not client.volumes.list(filters={"label": f"dev.fleet.project={fleet}"})
    assert os.path.isdir(app)  # this machine's directory is untouched
