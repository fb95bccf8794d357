"""Validation gaps and `fmt --diff`, through the real CLI (no engine needed)."""

from __future__ import annotations

import json
import textwrap

from tests.conftest import run_fleet


def test_evn_gets_did_you_mean_env(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("fleet: demo\ndefaults: {image: x}\nagents:\n  web:\n    evn: {A: b}\n")
    r = run_fleet("validate", str(path))
    assert r.code == 1 and r.err.strip().endswith("agents.web.evn: unknown key; did you mean 'env'?"), r.text
    assert f"{path.name}:5:5:" in r.err or ":5:5:" in r.err


def test_a_misindented_setting_points_at_the_indentation(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent("""\
        fleet: demo
        defaults: {image: x}
        agents:
          web:
            command: ["python3", "-m", "http.server", "3000"]
          ports:
            web: 3000
        """))
    r = run_fleet("validate", str(path))
    assert r.code == 1, r.text
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, r.err  # one clear line, not the errors of an agent called "ports"
    assert ":6:3: agents.ports:" in lines[0] and "indent it under agent 'web' (agents.web.ports)" in lines[0], r.err
    r = run_fleet("apply", str(path))
    assert r.code == 1 and "indented as an agent name" in r.err and "Traceback" not in r.text


def test_validate_json_for_a_missing_file(tmp_path):
    r = run_fleet("validate", "-o", "json", "missing.yaml", cwd=tmp_path)
    assert r.code == 1, r.text
    doc = json.loads(r.out)
    assert doc["valid"] is False and "no such file" in doc["problems"][0]["message"]


def test_fmt_diff_only_prints(tmp_path):
    path = tmp_path / "fleet.yaml"
    original = b"agents:\n  web: {image: x}\n# a comment\nfleet: demo\n"
    path.write_bytes(original)
    r = run_fleet("fmt", "--diff", str(path))
    assert r.code == 0 and r.out.startswith("---") and "+fleet: demo" in r.out, r.text
    assert path.read_bytes() == original
    r = run_fleet("fmt", "--diff", "--check", str(path))
    assert r.code == 1 and path.read_bytes() == original
    r = run_fleet("fmt", str(path))
    assert r.code == 0 and path.read_bytes() != original
    r = run_fleet("fmt", "--diff", str(path))
    assert r.code == 0 and r.out == ""
