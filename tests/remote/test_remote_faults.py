"""Failure containment with a remote engine, on the real thing (issue 16).

A fleet with a shared host of two agents on the remote engine (a second dockerd
behind sshd, tests/remote/conftest.py) and one private agent on the local engine.
Each fault leaves the other engine converged and destroys nothing: container ids
are compared before and after on both engines.

- an unreachable engine during `fleet apply` (sshd stopped; slow: dockerd stopped):
  the local change is made, the warning names the engine, the apply exits 1
  saying the engine was not reached, remote containers are untouched; once it is
  back, apply converges and the next one is up to date;
- the ssh connection killed while the apply's actions run on the remote: the apply
  completes through the reconnect or fails naming the engine; the next apply
  converges, without duplicates;
- the remote engine stopped under `fleet apply --watch` (dockerd stopped; slow:
  sshd and its sessions killed): the watcher keeps running, names the engine,
  converges a local edit, destroys nothing, and once the engine is back heals a
  remote container removed by hand (through that engine's own event stream).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cleanup_fleet, run_fleet, wait_for
from tests.remote.helpers import alive, ssh_children, sshd_pid
from tests.watch.proc import WatchProcess

pytestmark = pytest.mark.docker

LABEL = "dev.fleet.project"


def fleet_yaml(fleet: str, engine: str, image: str, local_env: str = "1", extra: tuple[str, ...] = ()) -> str:
    remote_agents = "".join(f"  {n}:\n    host: box\n    command: sleep infinity\n" for n in ("r1", "r2", *extra))
    return (
        f"fleet: {fleet}\n"
        "hosts:\n"
        "  box:\n"
        f"    engine: ssh://{engine}\n"
        f"    image: {image}\n"
        "agents:\n"
        f"{remote_agents}"
        "  loc:\n"
        f"    image: {image}\n"
        "    command: sleep infinity\n"
        f"    env: {{STEP: '{local_env}'}}\n"
    )


class Mixed:
    """The fleet under test, its file and what runs on both engines."""

    def __init__(self, tmp: Path, fleet: str, remote, local_client, image: str):
        self.dir = tmp
        self.path = tmp / "fleet.yaml"
        self.fleet = fleet
        self.remote = remote
        self.local = local_client
        self.image = image
        self.engine = f"ssh://{remote.name}"

    def write(self, local_env: str = "1", extra: tuple[str, ...] = ()) -> None:
        self.path.write_text(fleet_yaml(self.fleet, self.remote.name, self.image, local_env, extra))

    def fleet_cmd(self, *args: str, timeout: float = 180):
        return run_fleet(*args, str(self.path), cwd=self.dir, timeout=timeout)

    def remote_ids(self) -> dict[str, str]:
        cs = self.remote.docker().containers.list(all=True, filters={"label": f"{LABEL}={self.fleet}"})
        return {c.name: c.id for c in cs}

    def local_ids(self) -> dict[str, str]:
        cs = self.local.containers.list(all=True, filters={"label": f"{LABEL}={self.fleet}"})
        return {c.name: c.id for c in cs}

    def remote_running(self) -> dict[str, str]:
        cs = self.remote.docker().containers.list(all=True, filters={"label": f"{LABEL}={self.fleet}"})
        return {c.name: c.status for c in cs}

    def name(self, agent: str) -> str:
        return f"fleet_{self.fleet}_{agent}"


def children_of(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(p))
    return out


def stop_sshd(remote, sessions: bool = False) -> None:
    """The remote machine's sshd stops listening; `sessions`: its open connections
    end too (the machine went away), not only new ones refused."""
    pid = sshd_pid(remote)
    victims = children_of(pid) if sessions else []
    os.kill(pid, signal.SIGTERM)
    for v in victims:
        try:
            os.kill(v, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for(lambda: not alive(pid) and not any(alive(v) for v in victims), timeout=15, what="sshd to stop")


def stop_dockerd(remote) -> None:
    pid = remote.dockerd_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not alive(pid), timeout=60, what="the remote dockerd to stop")


def restore(remote) -> None:
    r = remote.script("up", remote.name)
    assert r.returncode == 0, f"remote-engine.sh up {remote.name}:\n{r.stdout}{r.stderr}"


@pytest.fixture
def mixed(tmp_path, fleet_name, remote_engine, docker_client, base_image):
    """The fleet applied on both engines; afterwards the remote engine is brought
    back up whatever the test did, and the fleet is removed from both engines."""
    m = Mixed(tmp_path, fleet_name, remote_engine, docker_client, base_image)
    m.write()
    r = m.fleet_cmd("apply", "--yes")
    assert r.code == 0, r.text
    yield m
    restore(remote_engine)
    r = m.fleet_cmd("destroy", "--yes")
    cleanup_fleet(remote_engine.docker(), fleet_name)
    assert r.code == 0, r.text


def assert_converged_after_restore(m: Mixed, remote_before: dict[str, str]) -> None:
    wait_for(lambda: all(s == "running" for s in m.remote_running().values()), timeout=60,
             what="the remote containers to run again")
    assert m.remote_ids() == remote_before, "a remote container was replaced or removed"


# ---------------------------------------------------------------- a. unreachable engine during apply


def _unreachable_apply(m: Mixed, stop) -> None:
    remote_before, local_before = m.remote_ids(), m.local_ids()
    assert set(remote_before) == {m.name("r1"), m.name("r2"), m.name("host_box")}
    assert set(local_before) == {m.name("loc")}
    stop(m.remote)
    m.write(local_env="2")
    r = m.fleet_cmd("apply", "--yes")
    # exit 1: the local change is made, but the fleet is not known to match the file
    assert r.code == 1, r.text
    assert re.search(rf"warning: engine {re.escape(m.engine)} unreachable \(.+\): agent r1, agent r2, host box unknown", r.out), r.text
    assert "replaced agent loc" in r.out, r.text
    assert f"engine {m.engine} did not answer" in r.err and "run `fleet apply` again" in r.err, r.text
    assert "Traceback" not in r.text
    for verb in ("destroy", "create", "replace", "join", "start"):
        assert not re.search(rf"^\s+\S\s+{verb}\s+.*(r1|r2|box)\b", r.out, re.M), r.text
    local_after = m.local_ids()
    assert set(local_after) == {m.name("loc")} and local_after != local_before  # replaced (env changed)
    env = m.local.containers.get(local_after[m.name("loc")]).attrs["Config"]["Env"]
    assert "STEP=2" in env
    s = m.fleet_cmd("status")
    assert re.search(r"^r1 .* unknown", s.out, re.M) and re.search(r"^loc .* running", s.out, re.M), s.text
    r = m.fleet_cmd("apply", "--yes", "--target", "loc")  # only the local agent: its engine answered
    assert r.code == 0 and "did not answer" not in r.err, r.text
    r = m.fleet_cmd("apply", "--yes", "--target", "r1")
    assert r.code == 1 and f"engine {m.engine} did not answer" in r.err, r.text

    restore(m.remote)
    r = m.fleet_cmd("apply", "--yes")
    assert r.code == 0, r.text  # once it answers: whatever the outage left (stopped agents) converges
    assert_converged_after_restore(m, remote_before)
    r = m.fleet_cmd("apply", "--yes")
    assert r.code == 0 and "is up to date" in r.out, r.text
    assert m.remote_ids() == remote_before and m.local_ids() == local_after


def test_sshd_down_during_apply_converges_the_local_agent_and_touches_nothing_remote(mixed):
    _unreachable_apply(mixed, stop_sshd)


@pytest.mark.slow
def test_remote_dockerd_down_during_apply(mixed):
    _unreachable_apply(mixed, stop_dockerd)


# ---------------------------------------------------------------- b. ssh killed mid-apply


def test_killing_the_ssh_connection_mid_apply_converges_on_the_next_apply(mixed):
    m = mixed
    remote_before, local_before = m.remote_ids(), m.local_ids()
    extra = ("r3", "r4", "r5", "r6", "r7", "r8")
    m.write(extra=extra)
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "apply", "--yes", "--parallel", "2", str(m.path)],
                            cwd=m.dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed: list[int] = []
    try:
        # the actions run: the first new agent exists on the remote engine
        wait_for(lambda: proc.poll() is not None or len(m.remote_ids()) > len(remote_before), timeout=60,
                 what="the apply's first join on the remote", interval=0.02)
        for pid in ssh_children(proc.pid):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"apply with ssh {killed} killed: exit {proc.returncode}\n{out}")  # shown with -rP
    assert killed, f"no ssh child of the apply was found to kill (exit {proc.returncode}):\n{out}"
    assert "Traceback" not in out, out
    if proc.returncode != 0:  # a call cut off mid-way: a clear failure naming the engine
        assert re.search(rf"engine {re.escape(m.engine)} unreachable|ssh connection to {m.remote.name} dropped", out), out
    r = m.fleet_cmd("apply", "--yes")
    assert r.code == 0, f"first apply (exit {proc.returncode}):\n{out}\nsecond apply:\n{r.text}"
    r = m.fleet_cmd("apply", "--yes")
    assert r.code == 0 and "is up to date" in r.out, r.text
    after = m.remote_ids()
    cs = m.remote.docker().containers.list(all=True, filters={"label": f"{LABEL}={m.fleet}"})
    agents = sorted(c.labels.get("dev.fleet.agent", "") for c in cs if c.labels.get("dev.fleet.kind") == "agent")
    assert agents == sorted(["r1", "r2", *extra]), agents  # each once: no duplicates
    assert {k: after[k] for k in remote_before} == remote_before  # nothing there before was replaced
    assert m.local_ids() == local_before


# ---------------------------------------------------------------- c. the engine stops mid-watch


def _engine_stops_mid_watch(m: Mixed, stop) -> None:
    remote_before = m.remote_ids()
    w = WatchProcess(m.path, "--resync", "600")  # healing below comes from events, not the resync
    try:
        w.wait_for(r"watching .* for fleet", timeout=60)
        at = w.mark()
        stop(m.remote)
        w.wait_for(rf"engine {re.escape(m.engine)} unreachable .*agent r1, agent r2, host box unknown.*still watching",
                   timeout=60, after=at)
        at = w.mark()
        m.write(local_env="2")
        w.wait_for(r"replaced agent loc", timeout=60, after=at)
        assert w.proc.poll() is None, w.text()
        assert "STEP=2" in m.local.containers.get(m.local_ids()[m.name("loc")]).attrs["Config"]["Env"]
        at = w.mark()
        restore(m.remote)
        w.wait_for(rf"engine {re.escape(m.engine)} answers again", timeout=60, after=at)
        assert_converged_after_restore(m, remote_before)
        # drift on the remote while watched: its own event stream brings the watcher round
        at = w.mark()
        m.remote.docker().containers.get(m.name("r2")).remove(force=True)
        w.wait_for(r"joined agent r2", timeout=30, after=at)
        wait_for(lambda: m.remote_running().get(m.name("r2")) == "running", timeout=30, what="r2 back")
        after = m.remote_ids()
        assert {k: v for k, v in after.items() if k != m.name("r2")} == {
            k: v for k, v in remote_before.items() if k != m.name("r2")}
        assert not re.search(r"^\S+\s+-\s+destroy|destroyed ", w.text(), re.M), w.text()
        assert w.proc.poll() is None, w.text()
    finally:
        w.close()
    assert w.proc.returncode == 0, w.text()


def test_remote_engine_stopped_mid_watch(mixed):
    _engine_stops_mid_watch(mixed, stop_dockerd)


@pytest.mark.slow
def test_remote_sshd_and_its_sessions_gone_mid_watch(mixed):
    _engine_stops_mid_watch(mixed, lambda remote: stop_sshd(remote, sessions=True))


@pytest.mark.slow
def test_watch_started_while_the_remote_engine_is_down(mixed):
    """The engine is away before the watcher starts: its event stream keeps trying,
    and once the engine answers, drift there is healed through that stream."""
    m = mixed
    remote_before = m.remote_ids()
    stop_sshd(m.remote)
    w = WatchProcess(m.path, "--resync", "600")
    try:
        w.wait_for(rf"engine {re.escape(m.engine)} unreachable .*still watching", timeout=60)
        w.wait_for(r"watching .* for fleet", timeout=60)
        at = w.mark()
        restore(m.remote)
        w.wait_for(rf"engine {re.escape(m.engine)} answers again", timeout=60, after=at)
        assert m.remote_ids() == remote_before
        time.sleep(6)  # the event stream's own retry (at most 5 s apart) has reconnected by now
        at = w.mark()
        m.remote.docker().containers.get(m.name("r1")).remove(force=True)
        w.wait_for(r"joined agent r1", timeout=30, after=at)
        assert not re.search(r"^\S+\s+-\s+destroy|destroyed ", w.text(), re.M), w.text()
    finally:
        w.close()
    assert w.proc.returncode == 0, w.text()
