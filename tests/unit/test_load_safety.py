"""Loading refuses what would hand an agent this machine, and what used to crash.

Workspaces that are the home directory, hold $FLEET_HOME or the Docker socket,
or lie inside $FLEET_HOME (symlinks resolved first); build contexts holding
$FLEET_HOME; a fleet file reached through a symlink an agent could re-point;
symlink loops (a RuntimeError, "bug in fleet", before). Each is one line naming
file:line:col and the key path, exit 1 through the real CLI. Plus: which files
are mounted read-only, and that the spec hash of a workspace without them is
what it was. Build context hashing: constant memory, `.dockerignore` honoured.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from reconciler.load.buildctx import context_hash
from reconciler.load.loader import load, validate_file
from reconciler.core.model import Workspace
from tests.conftest import run_fleet


def fleet(tmp: Path, body: str, name: str = "fleet.yaml") -> Path:
    path = tmp / name
    path.write_text("fleet: t\nagents:\n  a:\n    image: x\n" + body)
    return path


def one_problem(path: Path):
    spec, problems = validate_file(path)
    assert spec is None and len(problems) == 1, problems
    return problems[0]


def test_home_directory_itself_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "user"
    (home / "project").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    p = one_problem(fleet(tmp_path, f"    workspace: {home}\n"))
    assert (p.line, p.col, p.key) == (5, 16, "agents.a.workspace")
    assert "is your home directory" in p.message
    # a project inside it is fine
    assert validate_file(fleet(tmp_path, f"    workspace: {home}/project\n", "ok.yaml"))[1] == []


def test_folder_holding_fleet_home_and_anything_inside_it_are_refused(tmp_path, monkeypatch):
    fh = tmp_path / "state" / "fleet-home"
    (fh / "workspaces" / "t").mkdir(parents=True)
    monkeypatch.setenv("FLEET_HOME", str(fh))
    p = one_problem(fleet(tmp_path, "    workspace: ./state\n"))
    assert p.key == "agents.a.workspace" and "contains $FLEET_HOME" in p.message
    p = one_problem(fleet(tmp_path, f"    workspace: {fh}/workspaces/t\n", "f2.yaml"))
    assert "inside $FLEET_HOME" in p.message
    # through a symlink: resolved before checking
    (tmp_path / "innocent").symlink_to(tmp_path / "state")
    p = one_problem(fleet(tmp_path, "    workspace: {path: ./innocent, mode: copy}\n", "f3.yaml"))
    assert p.key == "agents.a.workspace.path" and "contains $FLEET_HOME" in p.message


def test_folder_holding_the_docker_socket_of_docker_host_is_refused(tmp_path, monkeypatch):
    (tmp_path / "engine").mkdir()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/engine/docker.sock")
    p = one_problem(fleet(tmp_path, "    workspace: ./engine\n"))
    assert "contains the Docker socket" in p.message


def test_symlink_to_a_system_directory_is_refused(tmp_path):
    (tmp_path / "etc-link").symlink_to("/etc")
    p = one_problem(fleet(tmp_path, "    workspace: ./etc-link\n"))
    assert "/etc is a system directory" in p.message


def test_build_context_holding_fleet_home_is_refused(tmp_path, monkeypatch):
    fh = tmp_path / "ctx" / ".fleet"
    fh.mkdir(parents=True)
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setenv("FLEET_HOME", str(fh))
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: t\nagents:\n  a:\n    build: {context: ./ctx}\n")
    p = one_problem(path)
    assert (p.line, p.key) == (4, "agents.a.build.context") and "the image would carry the credential key" in p.message


@pytest.mark.parametrize("body,key", [
    ("    workspace: ./loop\n", "agents.a.workspace"),
    ("    workspace: ./loop/deeper\n", "agents.a.workspace"),
])
def test_symlink_loop_in_a_workspace_is_a_clear_problem(tmp_path, body, key):
    (tmp_path / "loop").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop")
    p = one_problem(fleet(tmp_path, body))
    assert p.key == key and "symlink loop" in p.message


def test_symlink_loop_in_a_build_context_through_the_real_cli(tmp_path):
    (tmp_path / "loop").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop")
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: t\nagents:\n  a:\n    build: {context: ./loop}\n")
    for cmd in ("validate", "diff"):
        r = run_fleet(cmd, str(path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
        assert r.code == 1, r.text
        assert "Traceback" not in r.text and "bug in fleet" not in r.text, r.text
        assert r.err.strip() == f"{path}:4:22: agents.a.build.context: symlink loop: './loop' cannot be resolved", r.err


def test_workspace_refusals_through_the_real_cli_change_nothing(tmp_path):
    path = fleet(tmp_path, "    workspace: /\n")
    r = run_fleet("apply", "--yes", str(path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.code == 1 and "Traceback" not in r.text
    assert r.err.strip() == f"{path}:5:16: agents.a.workspace: refused as a workspace: / is the whole machine; give the agent a project folder"


def test_fleet_file_reached_through_a_link_inside_the_workspace_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    target = fleet(tmp_path / "real", "    workspace: ..\n")
    (tmp_path / "deploy").symlink_to("real")
    p = one_problem(tmp_path / "deploy" / target.name)
    assert p.key == "agents.a.workspace" and "could re-point" in p.message


# --------------------------------------------------------------------------- what is mounted read-only


def test_fleet_file_inside_a_shared_workspace_is_read_only_relative_to_it(tmp_path):
    (tmp_path / "deploy").mkdir()
    path = tmp_path / "deploy" / "fleet.yaml"
    path.write_text(
        "fleet: t\nhosts:\n  box: {image: x, workspace: ..}\n  far: {image: x, provider: modal, workspace: ..}\n"
        "agents:\n  a: {image: x, workspace: ..}\n  b: {image: x, workspace: {path: .., mode: copy}}\n"
        "  c: {image: x, workspace: ../elsewhere}\n  d: {host: box}\n"
    )
    (tmp_path / "elsewhere").mkdir()
    d = load(path)
    assert d.agents["a"].workspace.read_only == ("deploy/fleet.yaml",)
    assert d.agents["a"].spec()["read_only"] == ["deploy/fleet.yaml"]
    assert "read_only" not in d.agents["a"].spec()["workspace"]
    assert d.hosts["box"].workspace.read_only == ("deploy/fleet.yaml",)
    assert d.agents["d"].spec()["read_only"] == ["deploy/fleet.yaml"]
    # a copy, another folder, and Modal's upload: nothing to protect, hash as before
    for spec in (d.agents["b"].spec(), d.agents["c"].spec(), d.hosts["far"].spec()):
        assert "read_only" not in spec and "read_only" not in spec["workspace"]


def test_a_workspace_without_the_fleet_file_hashes_as_before():
    ws = Workspace(path=Path("/p"), mode="shared")
    assert ws.spec() == {"path": "/p", "mode": "shared", "branch": None}


# --------------------------------------------------------------------------- build contexts


def _old_hash(context: Path, dockerfile: str, args: dict) -> str:
    """What fleet computed before (whole files in memory): tags must not change."""
    h = hashlib.sha256()
    h.update(dockerfile.encode() + b"\0")
    for k in sorted(args):
        h.update(f"{k}={args[k]}\0".encode())
    for root, dirs, files in os.walk(context):
        dirs[:] = sorted(d for d in dirs if d not in {".git", "node_modules", "__pycache__", ".venv"})
        for name in sorted(files):
            p = Path(root) / name
            h.update(p.relative_to(context).as_posix().encode() + b"\0")
            if p.is_symlink():
                h.update(b"link:" + os.readlink(p).encode())
            else:
                h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def test_context_hash_is_unchanged_without_dockerignore(tmp_path):
    (tmp_path / "src" / "deep").mkdir(parents=True)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "src" / "a.py").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (tmp_path / "src" / "deep" / "b").write_text("b")
    (tmp_path / "link").symlink_to("/dev/zero")
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "x").write_text("x")
    assert context_hash(tmp_path, "Dockerfile", {"A": "1"}) == _old_hash(tmp_path, "Dockerfile", {"A": "1"})


def test_context_hash_honours_dockerignore(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "out.bin").write_text("1")
    (tmp_path / "build" / "keep.txt").write_text("k")
    (tmp_path / "app.log").write_text("1")
    (tmp_path / "main.c").write_text("int main;")
    (tmp_path / ".dockerignore").write_text("# comment\nbuild\n!build/keep.txt\n*.log\nDockerfile\n")
    first = context_hash(tmp_path, "Dockerfile", {})
    (tmp_path / "build" / "out.bin").write_text("2")
    (tmp_path / "app.log").write_text("2")
    assert context_hash(tmp_path, "Dockerfile", {}) == first, "ignored files do not change the image"
    for changed in ("build/keep.txt", "main.c", "Dockerfile"):  # a re-included file, a normal one, the Dockerfile
        (tmp_path / changed).write_text("changed")
        assert context_hash(tmp_path, "Dockerfile", {}) != first, changed
        first = context_hash(tmp_path, "Dockerfile", {})


def test_context_hash_of_a_large_file_takes_constant_memory(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with open(tmp_path / "big.img", "wb") as fh:  # sparse: no disk used
        fh.truncate(256 * 1024 * 1024)
    tracemalloc.start()
    try:
        context_hash(tmp_path, "Dockerfile", {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes hashing a 256 MiB file"


def test_an_agent_made_before_the_rule_is_replaced_once_with_a_clear_cause(tmp_path):
    from reconciler.core.reconcile import _spec_cause, changed_keys

    path = fleet(tmp_path, "    workspace: .\n")
    spec = load(path).agents["a"].spec()
    before = {k: v for k, v in spec.items() if k != "read_only"}  # what an older fleet stamped
    assert _spec_cause(changed_keys(before, spec)) == "spec changed: read_only"


def test_fleet_file_with_another_hard_link_in_the_workspace_is_refused(tmp_path):
    path = fleet(tmp_path, "    workspace: .\n")
    os.link(path, tmp_path / "notes.txt")  # writing notes.txt would write fleet.yaml
    p = one_problem(path)
    assert p.key == "agents.a.workspace" and "2 hard links" in p.message
    (tmp_path / "notes.txt").unlink()
    assert validate_file(path)[1] == []
