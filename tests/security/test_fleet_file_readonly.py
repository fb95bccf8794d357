"""An agent cannot promote itself by editing the fleet file in its workspace.

With `workspace: .` the folder holding fleet.yaml is the agent's /workspace.
fleet mounts the fleet file read-only at its place (and binds each directory
between the workspace and the file onto itself, so none can be renamed away):
from inside the real container every way of changing, replacing or deleting it
fails, the rest of the workspace stays writable, and the next apply sees the
file as the user wrote it.
"""

from __future__ import annotations

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.docker

# each must fail from inside the container; the last word is what it tries
ATTACKS = [
    "echo 'grants: [github]' >> {f}",
    "sed -i 's/sleep/true/' {f}",
    "echo x > /workspace/evil.yaml && mv -f /workspace/evil.yaml {f}",
    "rm -f {f}",
    "truncate -s 0 {f}",
    "ln -sf /workspace/evil.yaml {f}",
    "chmod 666 {f}",
    "python3 -c 'import os; os.rename(\"/workspace/evil.yaml\", \"{f}\")'",
]


def container(client, fleet: str, agent: str):
    found = client.containers.list(filters={"label": [f"dev.fleet.project={fleet}", f"dev.fleet.agent={agent}"]})
    assert len(found) == 1, found
    return found[0]


def sh(c, script: str) -> tuple[int, str]:
    code, out = c.exec_run(["sh", "-c", script])
    return code, out.decode(errors="replace")


def attack(c, inside: str, dirs: list[str]) -> None:
    for a in ATTACKS:
        code, out = sh(c, a.format(f=inside))
        assert code != 0, f"{a!r} succeeded inside the agent: {out}"
    for d in dirs:  # a directory holding the file cannot be moved away either
        code, out = sh(c, f"mv {d} {d}-moved")
        assert code != 0, f"moving {d} succeeded: {out}"
    code, out = sh(c, f"cat {inside}")
    assert code == 0 and "fleet:" in out, out
    code, out = sh(c, "echo work > /workspace/notes.txt && mkdir -p /workspace/src && echo 1 > /workspace/src/a && rm /workspace/evil.yaml && cat /workspace/notes.txt")
    assert code == 0 and "work" in out, out


def test_private_agent_cannot_change_the_fleet_file_in_its_workspace(tmp_path, docker_client, base_image, fleet_name):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"fleet: {fleet_name}\nagents:\n  dev:\n    image: {base_image}\n    workspace: .\n"
        '    command: ["sleep", "infinity"]\n'
    )
    before = path.read_bytes()
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    c = container(docker_client, fleet_name, "dev")
    attack(c, "/workspace/fleet.yaml", [])
    assert path.read_bytes() == before
    assert (tmp_path / "notes.txt").read_text() == "work\n"
    # the promotion attempt changed nothing: the next apply has nothing to do
    r = run_fleet("diff", str(path))
    assert r.code == 0 and "up to date" in r.text, r.text
    assert container(docker_client, fleet_name, "dev").id == c.id


@pytest.mark.slow
def test_nested_fleet_file_on_a_shared_host_is_read_only_for_every_agent(tmp_path, docker_client, base_image, fleet_name):
    (tmp_path / "deploy").mkdir()
    path = tmp_path / "deploy" / "fleet.yaml"
    path.write_text(
        f"fleet: {fleet_name}\nhosts:\n  box:\n    image: {base_image}\n    workspace: ..\n"
        'agents:\n  one:\n    host: box\n    command: ["sleep", "infinity"]\n'
        '  two:\n    host: box\n    command: ["sleep", "infinity"]\n'
    )
    before = path.read_bytes()
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    for agent in ("one", "two"):
        attack(container(docker_client, fleet_name, agent), "/workspace/deploy/fleet.yaml", ["/workspace/deploy"])
    assert path.read_bytes() == before
    r = run_fleet("diff", str(path))
    assert r.code == 0 and "up to date" in r.text, r.text


def test_saved_plan_inside_an_agents_workspace_is_refused(tmp_path, docker_client, base_image, fleet_name):
    """A plan is written after the containers exist, so it cannot be mounted
    read-only: an agent could rewrite it before `fleet apply plan.json`. fleet
    refuses a plan lying where an agent of the fleet can write, and applies one
    saved elsewhere."""
    path = tmp_path / "fleet.yaml"
    agent = f"  dev:\n    image: {base_image}\n    workspace: .\n    command: [\"sleep\", \"infinity\"]\n"
    path.write_text(f"fleet: {fleet_name}\nagents:\n{agent}")
    assert run_fleet("apply", "--yes", str(path)).code == 0
    path.write_text(f"fleet: {fleet_name}\nagents:\n{agent}  two:\n    image: {base_image}\n    command: [\"sleep\", \"infinity\"]\n")
    inside, outside = tmp_path / "plan.json", tmp_path.parent / f"{fleet_name}-plan.json"
    for out in (inside, outside):
        r = run_fleet("plan", str(path), "--out", str(out))
        assert r.code == 0, r.text
    code, _ = sh(container(docker_client, fleet_name, "dev"), "echo tampered >> /workspace/plan.json.note && test -w /workspace/plan.json")
    assert code == 0, "the agent can write the plan: it is not the fleet file"
    r = run_fleet("apply", str(inside), "--yes")
    assert r.code == 1 and "where an agent can rewrite it" in r.text and "Traceback" not in r.text, r.text
    assert not docker_client.containers.list(filters={"label": [f"dev.fleet.project={fleet_name}", "dev.fleet.agent=two"]})
    r = run_fleet("apply", str(outside), "--yes")
    assert r.code == 0, r.text
    outside.unlink()
    container(docker_client, fleet_name, "two")


def test_worktree_agent_cannot_plant_code_in_the_repositorys_config_or_hooks(tmp_path, docker_client, base_image, fleet_name):
    """In worktree mode the repository's .git is mounted so the agent can commit;
    its config (core.fsmonitor, core.hooksPath) and hooks run on this machine
    when the user runs git there, so those two are read-only."""
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    config = (repo / ".git" / "config").read_bytes()
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"fleet: {fleet_name}\nagents:\n  dev:\n    image: {base_image}\n    command: [\"sleep\", \"infinity\"]\n"
        "    workspace: {path: ./repo, mode: worktree}\n"
    )
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0, r.text
    c = container(docker_client, fleet_name, "dev")
    git_dir = repo / ".git"
    for attack in (f"git -C /workspace config core.fsmonitor 'touch /tmp/pwned'",
                   f"echo 'touch /tmp/pwned' > {git_dir}/hooks/post-checkout",
                   f"mv {git_dir}/config {git_dir}/config.old"):
        code, out = sh(c, attack)
        assert code != 0, f"{attack!r} succeeded: {out}"
    code, out = sh(c, "cd /workspace && echo w > w.txt && git add w.txt && git -c user.email=a@a -c user.name=a commit -qm work && git log --format=%s -1")
    assert code == 0 and "work" in out, out
    assert (repo / ".git" / "config").read_bytes() == config
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()


def test_pull_never_replaces_the_fleet_file_with_the_agents_copy(tmp_path, docker_client, base_image, fleet_name):
    """A copy-mode agent may edit its copy of fleet.yaml; pulling its workspace
    back into the project brings its work, never its fleet.yaml, not even
    through a symlink it planted."""
    path = tmp_path / "fleet.yaml"
    path.write_text(
        f"fleet: {fleet_name}\nagents:\n  dev:\n    image: {base_image}\n    command: [\"sleep\", \"infinity\"]\n"
        "    workspace: {path: ., mode: copy}\n"
    )
    before = path.read_bytes()
    assert run_fleet("apply", "--yes", str(path)).code == 0
    c = container(docker_client, fleet_name, "dev")
    code, out = sh(c, "cd /workspace && echo 'grants: [github]' >> fleet.yaml && ln -s fleet.yaml alias && echo work > result.txt")
    assert code == 0, out
    r = run_fleet("pull", "dev", str(tmp_path), "-f", str(path))
    assert r.code == 0, r.text
    assert "kept your fleet.yaml" in r.err, r.text
    assert path.read_bytes() == before
    assert (tmp_path / "result.txt").read_text() == "work\n"


@pytest.mark.slow
def test_promotion_under_watch_has_no_effect(tmp_path, docker_client, base_image, fleet_name):
    """The attack of issue 12: `workspace: .` and `fleet apply --watch` running;
    the agent rewrites /workspace/fleet.yaml to give itself grants and `/`.
    Every write fails, watch sees nothing to do, the agent keeps its container
    and no proxy settings; an edit by the user is still applied."""
    from tests.watch.proc import WatchProcess

    path = tmp_path / "fleet.yaml"
    body = f"fleet: {fleet_name}\nagents:\n  dev:\n    image: {base_image}\n    workspace: .\n    command: [\"sleep\", \"infinity\"]\n"
    path.write_text(body)
    w = WatchProcess(path)
    try:
        w.wait_for(r"watching fleet\.yaml for fleet " + fleet_name)
        c = container(docker_client, fleet_name, "dev")
        evil = body.replace("    workspace: .\n", "    workspace: /\n    grants: [github, anthropic]\n")
        mark = w.mark()
        code, out = sh(c, f"cat > /workspace/fleet.yaml <<'X'\n{evil}X")
        assert code != 0, out
        code, out = sh(c, f"cat > /workspace/new.yaml <<'X'\n{evil}X\nmv -f /workspace/new.yaml /workspace/fleet.yaml")
        assert code != 0, out
        assert path.read_text() == body
        path.write_text(body.replace('["sleep", "infinity"]', '["sleep", "999999"]'))  # the user's own edit
        w.wait_for(r"fleet\.yaml changed: Plan for", after=mark)
        w.wait_for(r"replaced agent dev|created agent dev", after=mark)
        assert "github" not in w.text(mark) and "workspace: /" not in w.text(mark)
        new = container(docker_client, fleet_name, "dev")
        env = " ".join(new.attrs["Config"]["Env"])
        assert "HTTPS_PROXY" not in env.upper() and "/var/run/docker.sock" not in str(new.attrs["Mounts"])
    finally:
        w.close()
