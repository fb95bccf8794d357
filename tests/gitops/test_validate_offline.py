"""`fleet validate` is what CI runs on every push: offline (no Docker engine
needed, none contacted) and, with -o json, problems as data."""

from __future__ import annotations

import json

from tests.conftest import run_fleet

from .helpers import write

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def test_validate_never_needs_an_engine(tmp_path):
    path = write(
        tmp_path / "fleet.yaml",
        """
        fleet: offline
        defaults:
          image: no-such-image:never-pulled
        hosts:
          pod: {}
        agents:
          web:
            command: ["sleep", "infinity"]
            ports: {web: 3000}
          a1:
            host: pod
        """,
    )
    r = run_fleet("validate", str(path), env=NO_ENGINE)
    assert r.code == 0, r.text
    assert "valid" in r.out
    r = run_fleet("validate", "-o", "json", str(path), env=NO_ENGINE)
    assert r.code == 0, r.text
    doc = json.loads(r.out)
    assert doc == {"format_version": 1, "file": str(path), "valid": True, "problems": []}
    # whereas anything that observes says the engine is missing
    r = run_fleet("diff", str(path), env=NO_ENGINE)
    assert r.code == 1 and "Docker" in r.err


def test_validate_json_gives_file_line_column_key_and_message(tmp_path):
    path = write(
        tmp_path / "fleet.yaml",
        """
        fleet: probs
        defualts:
          image: x
        agents:
          web:
            image: x
            ports: {web: 70000}
          worker:
            image: x
            host: nowhere
        """,
    )
    r = run_fleet("validate", "--output", "json", str(path), env=NO_ENGINE)
    assert r.code == 1, r.text
    assert "Traceback" not in r.text
    doc = json.loads(r.out)
    assert doc["format_version"] == 1 and doc["valid"] is False
    problems = doc["problems"]
    for p in problems:
        assert set(p) == {"file", "line", "column", "key", "message"}
        assert p["file"].endswith("fleet.yaml") and p["line"] >= 1 and p["column"] >= 1
    by_key = {p["key"]: p for p in problems}
    assert by_key["defualts"]["line"] == 2 and by_key["defualts"]["column"] == 1
    assert "did you mean 'defaults'" in by_key["defualts"]["message"]
    port = by_key["agents.web.ports.web"]
    assert port["line"] == 7 and "65535" in port["message"]
    assert by_key["agents.worker.host"]["line"] == 10 and "nowhere" in by_key["agents.worker.host"]["message"]


def test_validate_rejects_an_unknown_output_format(tmp_path):
    path = write(tmp_path / "fleet.yaml", "fleet: x\n")
    r = run_fleet("validate", "-o", "yaml", str(path))
    assert r.code == 2 and "yaml" in r.err
