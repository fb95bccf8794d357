"""One connection per engine, on the real thing: a second dockerd behind sshd.

An ssh:// engine is reached through ONE `ssh -N -L` for the life of a command;
a killed ssh is replaced on the next call; closing (also on an exception, on
SIGTERM, and when the process is killed) leaves no ssh and no socket; an engine
that does not answer is a clear "engine NAME unreachable: ..." error, quickly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reconciler.core.errors import EngineUnavailable, FleetError
from reconciler.providers.docker.connect import EngineConnection, EngineUnreachable, parse_engine
from tests.conftest import ROOT, free_port, wait_for
from tests.remote.helpers import alive, ssh_children, ssh_forward

pytestmark = pytest.mark.docker


def connect(remote, **kw) -> EngineConnection:
    address = parse_engine(f"ssh://{remote.name}")
    assert not isinstance(address, str), address
    return EngineConnection(address, name=remote.name, **kw)


def is_the_remote(api, remote) -> bool:
    return api.info()["DockerRootDir"] == f"/var/lib/fleet-remote/{remote.name}/docker"


def test_twenty_calls_over_one_ssh_connection(remote_engine):
    before = set(ssh_children())
    with connect(remote_engine) as conn:
        assert conn.api.version()["Version"] == remote_engine.docker().version()["Version"]
        assert is_the_remote(conn.api, remote_engine)  # not this machine's engine
        for _ in range(20):
            conn.api.containers(all=True)
            conn.client.images.list()
        ours = set(ssh_children()) - before
        assert ours == {conn.ssh_pid}, f"ssh processes: {ours}"
        assert conn.connects == 1
        sock = conn.socket_path
        assert sock is not None and oct(sock.stat().st_mode & 0o777) == "0o600"
        assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"  # the socket is root on that engine


def test_a_killed_ssh_is_replaced_on_the_next_call(remote_engine):
    with connect(remote_engine) as conn:
        first = conn.ssh_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), timeout=10, what="ssh to die")
        assert is_the_remote(conn.api, remote_engine)  # reconnects and answers
        assert conn.connects == 2
        assert conn.ssh_pid not in (None, first)
        os.kill(conn.ssh_pid, signal.SIGKILL)  # killed right before a read: the read still answers
        assert conn.api.containers(all=True) is not None
        assert conn.connects == 3
        assert [p for p in ssh_children() if p == conn.ssh_pid] == [conn.ssh_pid]


def test_a_connection_opened_in_a_worker_thread_outlives_the_thread(remote_engine):
    """ssh dies with the process (parent-death signal), not with the pool thread that
    happened to open the connection."""
    from concurrent.futures import ThreadPoolExecutor

    conn = connect(remote_engine)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(conn.open).result()
    pid = conn.ssh_pid  # the worker thread has ended
    time.sleep(0.3)
    try:
        assert pid is not None and alive(pid)
        assert is_the_remote(conn.api, remote_engine)
        assert conn.connects == 1 and conn.ssh_pid == pid
    finally:
        conn.close()


def test_close_leaves_no_ssh_and_no_socket(remote_engine):
    conn = connect(remote_engine).open()
    pid, sock = conn.ssh_pid, conn.socket_path
    assert pid is not None and sock is not None and sock.exists()
    conn.close()
    assert not alive(pid)
    assert not sock.parent.exists()
    with pytest.raises(EngineUnreachable, match="closed"):
        conn.api.containers()
    conn.close()  # twice is fine

    with pytest.raises(RuntimeError, match="boom"):
        with connect(remote_engine) as conn2:
            pid, sock = conn2.ssh_pid, conn2.socket_path
            raise RuntimeError("boom")
    assert pid is not None and sock is not None
    assert not alive(pid) and not sock.parent.exists()


CHILD = textwrap.dedent("""
    import sys, time
    from reconciler.providers.docker.connect import EngineConnection, parse_engine
    conn = EngineConnection(parse_engine(sys.argv[1]), name="x").open()
    conn.api.containers()
    print(conn.ssh_pid, conn.socket_path.parent, flush=True)
    time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_command_killed_leaves_no_ssh(remote_engine, sig):
    """SIGTERM: closed cleanly (no ssh, no socket). SIGKILL: the kernel ends ssh with
    the process; its directory is swept by the next connection."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, f"ssh://{remote_engine.name}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        pid_text, directory = line.split()
        ssh_pid = int(pid_text)
        assert alive(ssh_pid)
        proc.send_signal(sig)
        assert proc.wait(20) == -sig
        wait_for(lambda: not alive(ssh_pid), timeout=10, what="ssh to end with its command")
        if sig == signal.SIGTERM:
            assert not Path(directory).exists()
        else:
            with connect(remote_engine) as conn:
                conn.api.ping()
            assert not Path(directory).exists(), "a dead command's directory is swept"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unix_and_tcp_engines_just_build_the_client(remote_engine):
    with EngineConnection(parse_engine(remote_engine.docker_host)) as conn:  # type: ignore[arg-type]
        assert is_the_remote(conn.api, remote_engine)
        assert conn.ssh_pid is None
    port = free_port()

    def answers():
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    # the remote engine's socket as a plain TCP port on this machine (no TLS: a test only)
    with ssh_forward(remote_engine.name, "-L", f"127.0.0.1:{port}:/var/run/docker.sock", ready=answers):
        address = parse_engine(f"tcp://127.0.0.1:{port}", env={})
        assert not isinstance(address, str)
        with EngineConnection(address) as conn:
            assert is_the_remote(conn.api, remote_engine)


def test_nothing_listening_is_a_clear_error(remote_engine):
    port = free_port()
    address = parse_engine(f"ssh://root@127.0.0.1:{port}")
    assert not isinstance(address, str)
    conn = EngineConnection(address, name="nowhere", connect_timeout=5)
    with pytest.raises(EngineUnreachable) as err:
        conn.open()
    assert str(err.value).startswith("engine nowhere unreachable: ssh: ")
    assert "Connection refused" in str(err.value)
    assert isinstance(err.value, EngineUnavailable) and isinstance(err.value, FleetError)
    assert err.value.lines() == [str(err.value)]
    conn.close()
    # the remote's address without the alias: its host key is unknown there, and ssh
    # in batch mode refuses at once instead of asking
    unknown = parse_engine(f"ssh://root@{remote_engine.remote_ip}")
    assert not isinstance(unknown, str)
    refused = EngineConnection(unknown, connect_timeout=5)
    with pytest.raises(EngineUnreachable, match=r"unreachable: ssh: Host key verification failed"):
        refused.open()
    assert refused.ssh_pid is None
    left = refused.socket_path
    refused.close()
    assert left is not None and not left.parent.exists()
    missing = parse_engine("unix:///run/no-such-engine.sock")
    assert not isinstance(missing, str)
    with pytest.raises(EngineUnreachable, match=r"engine unix:///run/no-such-engine.sock unreachable: no socket at"):
        EngineConnection(missing).open()


@pytest.mark.timeout(60)
def test_a_frozen_remote_ends_the_connection_and_it_comes_back(remote_engine):
    """sshd stopped dead (SIGSTOP): the call waiting on it fails once ssh's keepalive
    gives up (interval x count), not after the 120 s read timeout; then it recovers."""
    conn = connect(remote_engine, keepalive=(1, 2), connect_timeout=3).open()
    client = conn.client
    sshd = [int(p) for p in subprocess.run(["ip", "netns", "pids", remote_engine.netns], capture_output=True,
                                           text=True).stdout.split() if Path(f"/proc/{p}/comm").read_text().strip() == "sshd"]
    assert sshd
    try:
        for pid in sshd:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(EngineUnreachable, match=f"engine {remote_engine.name} unreachable: the ssh connection to {remote_engine.name} dropped"):
            conn.api.containers()
        print(f"frozen remote reported after {time.monotonic() - started:.1f}s")
    finally:
        for pid in sshd:
            os.kill(pid, signal.SIGCONT)
    assert client.containers.list() is not None  # the client taken before the drop works again
    assert client.api is conn.api and is_the_remote(conn.api, remote_engine)
    assert conn.connects == 3  # the first; the retry while frozen (failed); the one now
    assert len([p for p in ssh_children() if p == conn.ssh_pid]) == 1
    conn.close()


@pytest.mark.timeout(90)
def test_a_stopped_remote_engine_is_a_clear_error_then_comes_back(remote_engine):
    """The last test of this file on purpose: it stops the session's remote engine
    (by its pid) and starts it again."""
    conn = connect(remote_engine, connect_timeout=5).open()
    pid = remote_engine.dockerd_pid()
    assert pid is not None
    try:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid), timeout=40, what="the remote dockerd to stop")
        started = time.monotonic()
        with pytest.raises(EngineUnreachable) as err:
            conn.api.containers()
        msg = str(err.value)
        assert msg.startswith(f"engine {remote_engine.name} unreachable: the Docker engine behind ssh {remote_engine.name} does not answer"), msg
        with pytest.raises(EngineUnreachable, match=f"engine {remote_engine.name} unreachable"):
            with connect(remote_engine, connect_timeout=5):
                pass
        print(f"unreachable reported after {time.monotonic() - started:.2f}s")
    finally:
        r = remote_engine.script("up", remote_engine.name)
        assert r.returncode == 0, r.stdout + r.stderr
    assert is_the_remote(conn.api, remote_engine)  # the same connection, the engine back
    conn.close()
