"""`pip install -e .` is warning-free: the license is an SPDX string (PEP 639), and
a fresh editable install into an empty venv prints no deprecation warning from the
build backend (pip shows the backend's output with -v)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import ROOT


def test_pyproject_uses_an_spdx_license_and_a_setuptools_that_reads_it():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"
    assert not any(c.startswith("License ::") for c in meta["project"].get("classifiers", []))
    (setuptools,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert re.fullmatch(r"setuptools>=(\d+)", setuptools) and int(setuptools.split(">=")[1]) >= 77
    test_extra = " ".join(meta["project"]["optional-dependencies"]["test"])
    for tool in ("check-jsonschema", "zizmor", "actionlint"):
        assert tool in test_extra, f"{tool} must be in the `test` extra so `make test` installs it"


@pytest.mark.slow  # a new venv and a build: half a minute on a busy machine
def test_fresh_editable_install_prints_no_deprecation_warning(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-v", "--no-deps", "--disable-pip-version-check", "-e", str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    warnings = [line for line in out.splitlines() if re.search(r"Deprecat|SetuptoolsWarning|UserWarning", line)]
    assert not warnings, "\n".join(warnings)
