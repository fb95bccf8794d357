"""The checked-in JSON Schema of fleet.yaml: up to date with the models, accepting
the root fleet.yaml and every example, and named at the top of each of them so
editors (yaml-language-server) check the files as they are typed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.load.schemajson import fleet_schema as json_schema
from tests.conftest import ROOT, run_fleet

SCHEMA = ROOT / "schemas" / "fleet.schema.json"
REGENERATE = "run `make schema` (or `fleet schema > schemas/fleet.schema.json`) and commit the result"
HEADER = re.compile(r"^# yaml-language-server: \$schema=(\S+)\s*$")


def fleet_files() -> list[Path]:
    files = [ROOT / "fleet.yaml"] + sorted((ROOT / "examples").rglob("fleet.yaml"))
    return [f for f in files if f.is_file()]


def as_json(path: Path):
    """The file as the JSON an editor's schema check sees (YAML 1.2 core types)."""
    data = YAML(typ="safe", pure=True).load(path.read_text())
    return json.loads(json.dumps(data))


def test_checked_in_schema_equals_fleet_schema_output():
    r = run_fleet("schema")
    assert r.code == 0, r.text
    assert r.out == SCHEMA.read_text(), f"schemas/fleet.schema.json is stale: {REGENERATE}"
    assert json.loads(SCHEMA.read_text()) == json_schema(), f"schemas/fleet.schema.json is stale: {REGENERATE}"


def test_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_there_are_examples_to_check():
    names = {str(f.relative_to(ROOT)) for f in fleet_files()}
    assert {"fleet.yaml", "examples/gitops/fleet.yaml"} <= names


@pytest.mark.parametrize("path", fleet_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_schema_accepts_every_fleet_file(path):
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(as_json(path)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", fleet_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fleet_file_names_the_schema_on_its_first_line(path):
    first = path.read_text().splitlines()[0]
    m = HEADER.match(first)
    assert m, f"{path.relative_to(ROOT)} must start with '# yaml-language-server: $schema=<relative path to schemas/fleet.schema.json>'"
    assert (path.parent / m.group(1)).resolve() == SCHEMA.resolve(), f"{m.group(1)} does not point at schemas/fleet.schema.json"


@pytest.mark.parametrize("path", fleet_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_fleet_file_is_valid(path):
    r = run_fleet("validate", str(path), env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert r.code == 0, r.text


def test_schema_rejects_what_validate_rejects(tmp_path):
    """The schema is not a rubber stamp: the mistakes editors should flag are flagged."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for bad in (
        {"fleet": "Bad_Name"},
        {"fleet": "ok", "agents": {"web": {"image": "x", "ports": {"web": 70000}}}},
        {"fleet": "ok", "agents": {"web": {"image": "x", "imgae": "y"}}},
        {"fleet": "ok", "agents": {"web": {"image": "x", "restart": "sometimes"}}},
        {"agents": {}},
    ):
        assert list(validator.iter_errors(bad)), bad
