"""scripts/build-base-image.sh takes its Debian mirror from the machine's apt
sources (one-line .list files and deb822 .sources), falls back to
deb.debian.org, and says clearly which mirror failed. The failure is real:
debootstrap against a closed port on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

MIRROR = ROOT / "scripts" / "debian-mirror.py"
SCRIPT = ROOT / "scripts" / "build-base-image.sh"


def apt_root(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "etc" / "apt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    (tmp_path / "etc" / "apt" / "sources.list.d").mkdir(parents=True, exist_ok=True)
    return tmp_path


def mirror(root: Path, *args: str) -> tuple[int, str]:
    r = subprocess.run([sys.executable, str(MIRROR), *args, "--root", str(root)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout.strip()


def test_deb822_sources_skip_security_disabled_and_third_party(tmp_path):
    root = apt_root(tmp_path, {
        "sources.list.d/nodesource.sources": """
            Types: deb
            URIs: https://deb.nodesource.com/node_20.x
            Suites: nodistro
            Components: main
            """,
        "sources.list.d/off.sources": """
            Types: deb
            URIs: http://old.example/debian
            Suites: bookworm
            Components: main
            Enabled: no
            """,
        "sources.list.d/debian.sources": """
            Types: deb
            URIs: http://mirror.internal/debian-security
            Suites: bookworm-security
            Components: main

            Types: deb deb-src
            # a comment
            URIs: http://mirror.internal/debian/
            Suites: bookworm bookworm-updates
            Components: main contrib
            """,
    })
    assert mirror(root) == (0, "http://mirror.internal/debian")


def test_one_line_lists_with_options_and_the_wanted_suite_first(tmp_path):
    root = apt_root(tmp_path, {
        "sources.list": """
            # deb http://commented.example/debian bookworm main
            deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://trixie.example/debian trixie main
            deb http://security.example/debian-security bookworm-security main
            """,
        "sources.list.d/bookworm.list": "deb http://bookworm.example/debian bookworm-updates main\n",
    })
    assert mirror(root, "bookworm") == (0, "http://bookworm.example/debian")
    assert mirror(root, "trixie") == (0, "http://trixie.example/debian")


def test_nothing_configured_is_exit_1(tmp_path):
    assert mirror(apt_root(tmp_path, {}))[0] == 1


def test_this_machine_has_a_mirror():
    r = subprocess.run([sys.executable, str(MIRROR)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith(("http://", "https://")), r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("debootstrap") is None or os.geteuid() != 0, reason="needs root and debootstrap (make base-image installs it)")
def test_a_failing_mirror_from_apt_sources_is_named_in_one_clear_message(tmp_path):
    port = free_port()
    root = apt_root(tmp_path / "root", {
        "sources.list.d/debian.sources": f"""
            Types: deb
            URIs: http://127.0.0.1:{port}/debian
            Suites: bookworm
            Components: main
            """,
    })
    env = dict(os.environ, FLEET_BASE_IMAGE="fleet-test-never-built:none", FLEET_APT_ROOT=str(root), TMPDIR=str(tmp_path))
    env.pop("FLEET_DEBIAN_MIRROR", None)
    env.pop("http_proxy", None)
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1
    assert f"from http://127.0.0.1:{port}/debian (this machine's apt sources)" in r.stderr, r.stderr
    assert "failed" in r.stderr and "FLEET_DEBIAN_MIRROR" in r.stderr
    # FLEET_DEBIAN_MIRROR overrides the apt sources (and is named as the source)
    empty = apt_root(tmp_path / "empty", {})
    env.update(FLEET_APT_ROOT=str(empty), FLEET_DEBIAN_MIRROR=f"http://127.0.0.1:{port}/debian")
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "(FLEET_DEBIAN_MIRROR)" in r.stderr, r.stderr
