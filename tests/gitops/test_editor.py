"""What a person sees in the editor: yaml-language-server (VS Code's YAML support
and others) with schemas/fleet.schema.json, over every file of tests/data and
every fleet file of the repository. Valid files get no mark; every bad file gets
one unless the rule is one only `fleet validate` can check (the allow-list of
test_schema_agreement.py) or an editor never marks it (below). Messages name the
key."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

from .lsp import YamlLanguageServer
from .test_schema_agreement import BAD, FLEET_ONLY, GOOD, SCHEMA
from .test_schema import fleet_files

# bad file -> why an editor shows nothing although check-jsonschema fails it
EDITOR_SILENT = {
    "comments-only.yaml": "an empty document: editors validate nothing",
    "merge-non-mapping.yaml": "a YAML merge key (<<) onto a scalar: the editor's parser takes it",
    "not-utf8.yaml": "not UTF-8: the editor shows its own decoding, not a schema problem",
    "alias-bomb.yaml": "not opened: expanding it is the point",
}


@pytest.fixture(scope="module")
def marks():
    server = YamlLanguageServer()
    try:
        files = {p.name: p for p in GOOD + BAD if p.name != "alias-bomb.yaml"}
        files.update({f"repo:{p.relative_to(ROOT)}": p for p in fleet_files()})
        texts = {name: p.read_bytes().decode("utf-8", errors="replace") for name, p in files.items()}
        yield server.diagnostics(texts, SCHEMA)
    finally:
        server.close()


def messages(marks, name):
    return [f"{d['range']['start']['line']}:{d['range']['start']['character']} {d['message']}" for d in marks[name]]


def test_valid_files_get_no_mark(marks):
    for name in [p.name for p in GOOD] + [n for n in marks if n.startswith("repo:")]:
        assert marks[name] == [], f"{name}: {messages(marks, name)}"


def test_every_bad_file_is_marked_unless_only_fleet_validate_can_tell(marks):
    for path in BAD:
        if path.name in EDITOR_SILENT:
            continue
        if path.name in FLEET_ONLY:
            assert marks[path.name] == [], f"{path.name} is now marked: update FLEET_ONLY ({messages(marks, path.name)})"
        else:
            assert marks[path.name], f"{path.name}: the editor shows nothing, fleet validate rejects it"


def test_the_issues_example_gets_the_nine_marks_fleet_validate_reports(marks):
    assert len(marks["map-key-holes.yaml"]) == 9, messages(marks, "map-key-holes.yaml")


@pytest.mark.parametrize(
    "name, needle",
    [
        ("image-and-build.yaml", "Property build is not allowed"),
        ("modal-key-on-docker.yaml", "Property idle_timeout is not allowed"),
        ("shared-host-agent-overrides.yaml", "Property image is not allowed"),
        ("grant-builtin-name.yaml", "is a built-in grant"),
        ("no-image.yaml", 'Missing property "image"'),
        ("command-empty-string.yaml", "shorter than the minimum length of 1"),
        ("port-service-underscore.yaml", "must be a lowercase DNS label"),
        ("env-key-dash.yaml", "must be an environment variable name"),
    ],
)
def test_messages_name_the_key_and_the_rule(marks, name, needle):
    assert any(needle in m for m in messages(marks, name)), messages(marks, name)
