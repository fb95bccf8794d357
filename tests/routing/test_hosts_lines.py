"""`fleet proxy hosts`: /etc/hosts lines for the fleet's hostnames, for clients
that ask the C library (Python, ...) where Debian's name service does not
resolve *.localhost. The lines are checked for real: appended to a copy of
/etc/hosts bind-mounted in a private mount namespace, Python resolves each name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

from reconciler.load.loader import load
from reconciler.routing.hostsfile import address, hosts_lines
from tests.conftest import run_fleet

FLEET = """
fleet: shop
proxy: {port: 8443, bind: 0.0.0.0}
defaults: {image: node:20}
agents:
  dark-mode: {ports: {web: 3000}}
  checkout: {ports: {web: 3000, api: 4000}}
  quiet: {}
"""


def write(tmp_path, text=FLEET):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_one_line_per_hostname_marked_with_the_fleet(tmp_path):
    lines = hosts_lines(load(write(tmp_path)))
    assert lines == [
        "127.0.0.1\tapi.checkout.localhost\t# fleet shop",
        "127.0.0.1\tweb.checkout.localhost\t# fleet shop",
        "127.0.0.1\tweb.dark-mode.localhost\t# fleet shop",
        "127.0.0.1\tdark-mode.localhost\t# fleet shop",  # one port: the agent's own name too
    ]
    assert [address(b) for b in ("0.0.0.0", "127.0.0.2", "::", "::1")] == ["127.0.0.1", "127.0.0.2", "::1", "::1"]


def test_cli_prints_them_offline_and_says_when_there_are_none(tmp_path):
    path = write(tmp_path)
    r = run_fleet("proxy", "hosts", str(path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.code == 0, r.text
    assert r.out.splitlines() == hosts_lines(load(path))
    r = run_fleet("proxy", "hosts", str(write(tmp_path, "fleet: bare\nagents: {a: {image: x}}\n")))
    assert r.code == 0 and r.out == "" and "no agent with ports" in r.err
    bad = run_fleet("proxy", "hosts", str(write(tmp_path, "fleet: Bad\n")))
    assert bad.code == 1 and "fleet.yaml:1:8: fleet:" in bad.err and "Traceback" not in bad.text


def test_python_resolves_every_name_with_the_lines_in_etc_hosts(tmp_path):
    path = write(tmp_path)
    lines = run_fleet("proxy", "hosts", str(path)).out
    hosts = tmp_path / "hosts"
    shutil.copyfile("/etc/hosts", hosts)
    with hosts.open("a") as fh:
        fh.write("\n" + lines)  # /etc/hosts may not end with a newline
    names = [line.split("\t")[1] for line in lines.splitlines()]
    probe = "import socket,sys; print(' '.join(socket.getaddrinfo(n, 80, socket.AF_INET)[0][4][0] for n in sys.argv[1:]))"
    r = subprocess.run(
        ["unshare", "--mount", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && p="$1" && shift && exec "$0" -c "$p" "$@"', sys.executable, probe, *names],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["127.0.0.1"] * len(names)
