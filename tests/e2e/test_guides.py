"""The README's "The two guides, with fleet", run as written: moat's "Running
multiple agents" and mng's "Parallel agents on a shared host", on the real engine
through the real CLI.

The fleet.yaml files and the `$` commands are read from README.md itself, so the
README cannot show a command this test does not run. The only substitutions: the
image (fleet-base:bookworm), `npm start` (a Python HTTP server on both ports),
`claude` (`cat`, which prints what is typed; for impl-agent also a server on :8000, the app it
would run), the fleet name and the proxy port."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import ROOT, Terminal, free_port, run_fleet, wait_for
from tests.e2e.test_docker_apply import containers

pytestmark = pytest.mark.docker

# stands in for impl-agent's `claude`: the app it would build and run on :8000, and `cat` for what is typed
APP = '[sh, -c, "python3 -m http.server 8000 & exec cat"]'
# stands in for `npm start`: each agent serves its own name on web (3000) and api (8080)
SERVE = ('echo "$FLEET_AGENT" > /tmp/index.html; python3 -m http.server -d /tmp 8080 & '
         'exec python3 -m http.server -d /tmp 3000')


def guide(title: str) -> tuple[list[str], list[str]]:
    """(yaml blocks, `$` command lines) of one guide's subsection of the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## The two guides, with fleet\n", 1)[1].split("\n## ", 1)[0]
    part = section.split(f"\n### {title}", 1)[1].split("\n### ", 1)[0]
    yamls = re.findall(r"```yaml\n(.*?)```", part, re.S)
    commands = [line[2:] for block in re.findall(r"```console\n(.*?)```", part, re.S)
                for line in block.splitlines() if line.startswith("$ ")]
    return yamls, commands


class Session:
    """The README's commands, typed in order in the directory holding fleet.yaml."""

    def __init__(self, commands: list[str], cwd: Path, port: int | None = None):
        self.pending = list(commands)
        self.cwd = cwd
        self.port = port

    def type(self, line: str):
        assert self.pending and self.pending[0] == line, f"README order: next is {self.pending[:1]}, test types {line!r}"
        self.pending.pop(0)
        if self.port:
            line = line.replace("localhost:8080", f"localhost:{self.port}")
        args = shlex.split(line)
        if args[0] == "curl":  # "$(fleet ca path)", as the shell would expand it
            ca = run_fleet("ca", "path", cwd=self.cwd).out.strip()
            args = [ca if a == "$(fleet ca path)" else a for a in args]
            proc = subprocess.run([*args[:1], "-sS", "-m", "5", *args[1:]], capture_output=True, text=True, timeout=15)
            return proc
        assert args[0] == "fleet", line
        return run_fleet(*args[1:], cwd=self.cwd)

    def ok(self, line: str) -> str:
        r = self.type(line)
        code, out = (r.returncode, r.stdout + r.stderr) if isinstance(r, subprocess.CompletedProcess) else (r.code, r.text)
        assert code == 0, f"{line}: exit {code}\n{out}"
        return out

    def done(self) -> None:
        assert not self.pending, f"README commands this test did not run: {self.pending}"


def get(ca: str, url: str) -> str:
    """The body of `url` through the proxy, TLS verified with fleet's CA ("" when it fails)."""
    proc = subprocess.run(["curl", "-sS", "-m", "5", "--cacert", ca, url], capture_output=True, text=True, timeout=15)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def started(c) -> tuple[str, str]:
    c.reload()
    return c.id, c.attrs["State"]["StartedAt"]


def git_repo(path: Path) -> None:
    path.mkdir()
    (path / "README.md").write_text("app\n")
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True)


def test_moat_running_multiple_agents(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    (spec,), commands = guide("Running multiple agents")
    port = free_port()
    git_repo(tmp_path / "my-app")
    text = (spec.replace("fleet: my-app", f"fleet: {fleet_name}").replace("port: 8080}", f"port: {port}}}")
            .replace("image: node:20", f"image: {base_image}").replace("command: [npm, start]", f"command: {SERVE!r}"))
    assert text.count(str(port)) == 1 and base_image in text and SERVE in text
    (tmp_path / "fleet.yaml").write_text(text)
    s = Session(commands, tmp_path, port)
    ca = str(fleet_home / "ca" / "ca.crt")

    out = s.ok("fleet apply")
    assert f"https://web.dark-mode.localhost:{port}" in out and f"https://api.checkout.localhost:{port}" in out
    assert ca in s.ok("fleet ca trust")
    # the proxy serves the table when apply returns (the wait is for the servers to listen)
    for agent in ("dark-mode", "checkout"):
        wait_for(lambda: get(ca, f"https://web.{agent}.localhost:{port}") == agent, what=f"{agent}'s web URL")
        proc = s.type(f"curl --cacert \"$(fleet ca path)\" https://web.{agent}.localhost:8080")
        assert proc.returncode == 0 and proc.stdout.strip() == agent, proc.stderr  # TLS verified with fleet's CA
    # the api service too (container port 8080, not the proxy's)
    wait_for(lambda: get(ca, f"https://api.checkout.localhost:{port}") == "checkout", what="checkout's api URL")

    out = s.ok("fleet proxy status")
    assert f"127.0.0.1:{port}" in out and f"https://web.dark-mode.localhost:{port}" in out
    rows = {line.split()[0]: line for line in s.ok("fleet status").splitlines()[1:]}
    assert rows.keys() == {"checkout", "dark-mode"} and all(" running " in r for r in rows.values())
    assert "branch fleet/dark-mode" in rows["dark-mode"] and f"https://api.dark-mode.localhost:{port}" in rows["dark-mode"]
    ls = [line.split() for line in s.ok("fleet ls").splitlines() if line.startswith(fleet_name + " ")]
    assert ls == [[fleet_name, "2", "2", "2", "running", "0", "docker"]]
    assert "Serving HTTP on 0.0.0.0 port 3000" in s.ok("fleet logs dark-mode")
    # inside the agent: its own URLs and its neighbour's, through the proxy, TLS verified by curl's defaults
    assert s.ok("fleet exec dark-mode 'echo \"$FLEET_URL_WEB\"'").strip() == f"https://web.dark-mode.localhost:{port}"
    assert s.ok("fleet exec dark-mode 'curl -sS \"$FLEET_URL_API\"'").strip() == "dark-mode"
    assert s.ok("fleet exec dark-mode 'curl -sS https://web.checkout.localhost:8080'").strip() == "checkout"

    agents = containers(docker_client, fleet_name)
    checkout_before = started(agents["agent:checkout"])
    out = s.ok("fleet stop dark-mode")
    assert "stays stopped until `fleet start dark-mode`" in out
    assert agents["agent:dark-mode"].id in {c.id for c in docker_client.containers.list(all=True, filters={"status": "exited"})}
    out = s.ok("fleet apply")
    assert "stopped by `fleet stop`; left stopped" in out
    assert containers(docker_client, fleet_name)["agent:dark-mode"].status == "exited"
    out = s.ok("fleet start dark-mode")
    assert "routes of dark-mode (started)" in out
    # back at the same URL, same container; checkout untouched
    assert started(agents["agent:dark-mode"])[0] == agents["agent:dark-mode"].id
    wait_for(lambda: get(ca, f"https://web.dark-mode.localhost:{port}") == "dark-mode", what="dark-mode after start")
    assert started(agents["agent:checkout"]) == checkout_before

    s.ok("fleet stop --all")
    assert {c.status for c in containers(docker_client, fleet_name).values()} == {"exited"}
    s.ok("fleet start --all")
    for agent in ("dark-mode", "checkout"):
        wait_for(lambda: get(ca, f"https://web.{agent}.localhost:{port}") == agent, what=f"{agent} after start --all")

    s.ok("fleet destroy --yes")
    assert containers(docker_client, fleet_name) == {}
    assert not (fleet_home / "workspaces" / fleet_name / "dark-mode").exists()  # clean worktrees go
    assert subprocess.run(["curl", "-sS", "-m", "5", "--cacert", ca, f"https://web.dark-mode.localhost:{port}"],
                          capture_output=True, text=True).returncode != 0  # the proxy is gone with the last routes
    s.done()


def test_mng_parallel_agents_on_a_shared_host(tmp_path, docker_client, base_image, fleet_name, fleet_home):
    (spec, joiner), commands = guide("Parallel agents on a shared host")
    git_repo(tmp_path / "app")

    port = free_port()

    def sub(text: str, claude: str = "[cat]") -> str:
        out = (text.replace("fleet: auth", f"fleet: {fleet_name}").replace("image: python:3.12-slim", f"image: {base_image}")
               .replace("command: [claude]", f"command: {claude}"))
        return out.replace("fleet: ", f"proxy: {{port: {port}}}\nfleet: ", 1) if "fleet: " in out else out

    spec = sub(spec, APP)
    joiner = sub(joiner)

    path = tmp_path / "fleet.yaml"
    path.write_text(spec)
    s = Session(commands, tmp_path, port)
    ca = str(fleet_home / "ca" / "ca.crt")

    out = s.ok("fleet apply")
    assert "create   host auth-host" in out and "join     agent impl-agent" in out
    assert f"impl-agent: https://api.impl-agent.localhost:{port}" in out
    impl = containers(docker_client, fleet_name)["agent:impl-agent"]
    wait_for(lambda: b"Implement JWT authentication" in impl.logs(), what="impl-agent's first message")
    before = started(impl)

    path.write_text(path.read_text() + joiner)
    out = s.ok("fleet apply")
    assert "join     agent test-agent" in out and "impl-agent" not in out.split("Plan for")[0], out
    agents = containers(docker_client, fleet_name)
    assert started(agents["agent:impl-agent"]) == before  # the neighbour kept running
    test = agents["agent:test-agent"]
    wait_for(lambda: b"Write integration tests" in test.logs(), what="test-agent's first message")
    rows = [line for line in s.ok("fleet status").splitlines() if "auth-host" in line]
    assert [r.split()[0] for r in rows] == ["impl-agent", "test-agent"] and all("running" in r and "delivered" in r for r in rows)

    env = {"FLEET_FILE": str(path)}
    assert s.pending[0] == "fleet attach impl-agent"
    s.pending.pop(0)
    with Terminal("attach", "impl-agent", env=env) as term:
        seen = term.read_until(b"Implement JWT authentication")
        assert b"attached to impl-agent" in seen and b"Implement JWT authentication" in seen, seen
        time.sleep(0.3)  # (as in test_attach: the keys reach a joined terminal)
        term.write(b"\x10\x11")  # Ctrl-P Ctrl-Q
        seen = term.read_until(b"keeps running")
        assert b"detached from impl-agent; it keeps running" in seen, seen
        assert term.exit_code() == 0
    assert started(agents["agent:impl-agent"]) == before

    # one filesystem: what test-agent writes, impl-agent's git status shows
    assert test.exec_run(["sh", "-c", "cd /workspace && echo 'def test_token(): pass' > test_auth.py"]).exit_code == 0
    out = s.ok('fleet exec impl-agent "git status"')
    assert "On branch" in out and "test_auth.py" in out
    # one network: test-agent reaches impl-agent's app on localhost; from here, at its URL
    wait_for(lambda: "200 OK" in run_fleet("exec", "test-agent", "curl -sSI http://localhost:8000/", cwd=tmp_path).out,
             what="impl-agent's app listening")
    assert s.ok("fleet exec test-agent 'curl -sSI http://localhost:8000/'").startswith("HTTP/1.0 200 OK")
    proc = s.type('curl --cacert "$(fleet ca path)" -sSI https://api.impl-agent.localhost:8080/')
    assert proc.returncode == 0 and proc.stdout.startswith("HTTP/1.1 200 OK"), proc.stderr
    out = s.ok('fleet message test-agent "Focus on HTTP-level tests, not internal function tests."')
    assert "sent 55 characters to test-agent" in out
    wait_for(lambda: "Focus on HTTP-level tests" in run_fleet("logs", "test-agent", cwd=tmp_path).out, what="message in logs")
    out = s.ok("fleet logs test-agent")
    assert "Write integration tests for the JWT auth feature" in out and "Focus on HTTP-level tests, not internal function tests." in out
    assert "Focus on HTTP-level" not in run_fleet("logs", "impl-agent", cwd=tmp_path).out  # only the intended agent

    # impl-agent is done: its entry goes, test-agent keeps running
    test_before = started(test)
    path.write_text(spec.split("  impl-agent:")[0] + joiner)
    out = s.ok("fleet apply")
    assert "destroy  agent impl-agent" in out and "routes of impl-agent (removed)" in out and "host auth-host" not in out, out
    agents = containers(docker_client, fleet_name)
    assert "agent:impl-agent" not in agents and started(agents["agent:test-agent"]) == test_before
    holder = agents["host:auth-host"]
    assert get(ca, f"https://api.impl-agent.localhost:{port}/") == ""  # its URL went with it
    # the last agent leaves: the host goes with it
    path.write_text(spec.split("  impl-agent:")[0].replace("agents:\n", "agents: {}\n"))
    out = s.ok("fleet apply")
    assert "destroy  host auth-host  no enabled agents on this host" in out, out
    assert containers(docker_client, fleet_name) == {}
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(holder.id)
    assert (tmp_path / "app" / "test_auth.py").exists()  # the work stays in ./app
    s.done()


def test_mng_shared_host_on_modal(tmp_path, fake_modal, fleet_name, fleet_home):
    """The README's note: the same fleet.yaml with `provider: modal` (against the fake
    Modal, whose sandboxes are real containers), the same commands up to the point
    where it says Modal differs; impl-agent, with a port, leaves without re-creating the sandbox."""
    from tests.modal.helpers import sandboxes, terminate_fleet

    (spec, joiner), commands = guide("Parallel agents on a shared host")
    note = "  auth-host:                       # provider: modal for a Modal sandbox\n"
    assert note in spec
    port = free_port()
    git_repo(tmp_path / "app")
    env = fake_modal.env()

    def sub(text: str, claude: str = "[cat]") -> str:
        return (text.replace("fleet: auth", f"proxy: {{port: {port}}}\nfleet: {fleet_name}").replace(note, note + "    provider: modal\n")
                .replace("command: [claude]", f"command: {claude}"))

    def typed(line: str) -> str:
        assert line in commands, line  # a command the README shows
        r = run_fleet(*shlex.split(line)[1:], cwd=tmp_path, env=env)
        assert r.code == 0, f"{line}: {r.text}"
        return r.out

    path = tmp_path / "fleet.yaml"
    try:
        path.write_text(sub(spec, APP))
        out = typed("fleet apply")
        assert "create   host auth-host  no sandbox" in out and f"impl-agent: https://api.impl-agent.localhost:{port}" in out, out
        [sb] = sandboxes(fake_modal, fleet_name)
        impl_tag = next(v for k, v in sb.tags.items() if k.endswith("impl-agent"))
        path.write_text(path.read_text() + sub(joiner))
        out = typed("fleet apply")
        assert "join     agent test-agent" in out and "replace" not in out, out
        [again] = sandboxes(fake_modal, fleet_name)  # the same sandbox, impl-agent's supervisor untouched
        assert again.id == sb.id and next(v for k, v in again.tags.items() if k.endswith("impl-agent")) == impl_tag
        rows = [line for line in typed("fleet status").splitlines() if "auth-host" in line]
        assert len(rows) == 2 and all(" modal " in r and "running" in r and "delivered" in r for r in rows), rows
        assert "On branch" in typed('fleet exec impl-agent "git status"')
        wait_for(lambda: "200 OK" in run_fleet("exec", "test-agent", "curl -sSI http://localhost:8000/", cwd=tmp_path, env=env).out,
                 what="impl-agent's app in the sandbox")
        assert typed("fleet exec test-agent 'curl -sSI http://localhost:8000/'").startswith("HTTP/1.0 200 OK")
        wait_for(lambda: get(str(fleet_home / "ca" / "ca.crt"), f"https://api.impl-agent.localhost:{port}/") != "",
                 what="impl-agent's URL through the sandbox's tunnel")
        assert "sent 55 characters" in typed('fleet message test-agent "Focus on HTTP-level tests, not internal function tests."')
        wait_for(lambda: "Focus on HTTP-level tests" in run_fleet("logs", "test-agent", cwd=tmp_path, env=env).out, what="message")
        assert "Write integration tests for the JWT auth feature" in typed("fleet logs test-agent")
        # impl-agent (with a port) leaves: the same sandbox, test-agent untouched (one tunnel, to a port router)
        test_tag = next(v for k, v in again.tags.items() if k.endswith("test-agent"))
        path.write_text(sub(spec.split("  impl-agent:")[0]) + sub(joiner))
        out = typed("fleet apply")
        assert "destroy  agent impl-agent" in out and "replace" not in out, out
        [still] = sandboxes(fake_modal, fleet_name)
        assert still.id == sb.id and next(v for k, v in still.tags.items() if k.endswith("test-agent")) == test_tag
        assert get(str(fleet_home / "ca" / "ca.crt"), f"https://api.impl-agent.localhost:{port}/") == ""  # URL gone
        r = run_fleet("destroy", "--yes", cwd=tmp_path, env=env)
        assert r.code == 0 and sandboxes(fake_modal, fleet_name) == [], r.text
    finally:
        terminate_fleet(fake_modal, fleet_name)
