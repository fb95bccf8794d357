"""check-jsonschema (what CI and editors run) agrees with `fleet validate` on every
file of tests/data: each good file passes both, each bad file fails both, except
where the rule is one JSON Schema cannot express. Those few are named below, each
with the reason, and the test checks that the list stays true (a file listed here
that the schema starts catching must come off the list).

The test is generic: a file added to tests/data/good or tests/data/bad is checked
without touching this file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.load.loader import validate_file
from reconciler.load.schemajson import fleet_schema
from tests.conftest import ROOT

SCHEMA = ROOT / "schemas" / "fleet.schema.json"
DATA = ROOT / "tests" / "data"
GOOD = sorted((DATA / "good").glob("*.yaml"))
BAD = sorted((DATA / "bad").glob("*.yaml"))

# bad file -> why only `fleet validate` rejects it
FLEET_ONLY = {
    # files on disk
    "build-context-missing.yaml": "file existence: the build context directory",
    "build-dockerfile-missing.yaml": "file existence: the Dockerfile inside the context",
    "workspace-missing.yaml": "file existence: the workspace directory",
    "workspace-is-file.yaml": "file existence: the workspace is a file, not a directory",
    # this machine's filesystem: symlinks resolved, $HOME, $FLEET_HOME and the Docker socket
    "workspace-root.yaml": "workspace safety: `/` after resolving symlinks on this machine",
    "workspace-system-dirs.yaml": "workspace safety: system directories after resolving symlinks on this machine",
    # references between parts of the document (JSON Schema has no data references)
    "undeclared-host.yaml": "undeclared host: `host:` must name a key of `hosts:`",
    "no-hosts-section.yaml": "undeclared host: `host:` with no `hosts:` at all",
    "unknown-grant.yaml": "unknown grant: a grant must be built in or a key of `grants:`",
    # values compared with each other
    "duplicate-port-private.yaml": "port uniqueness within one agent",
    "shared-host-port-clash.yaml": "port uniqueness across the agents of one host",
    "modal-router-port.yaml": "a port that depends on the host's provider (the Modal port router's)",
    "modal-relay-port.yaml": "a port that depends on the host's provider (the Modal grants relay's)",
    # values a parser reads (the engine address), and ones that depend on others
    "engine-not-a-url.yaml": "an engine address is checked by parsing it (ssh://, tcp://, unix://, a context name)",
    "engine-misplaced.yaml": "engine: on a Modal host or an agent of a shared host; ports and grants on a tcp:// engine",
    # the data model of JSON
    "port-float.yaml": "JSON Schema's integer is a number without fraction: 3000.0 is 3000 to it (and to editors)",
    # not given to the tool at all
    "alias-bomb.yaml": "check-jsonschema expands YAML aliases (the billion laughs) and does not finish; fleet refuses it",
}
NOT_RUN = {"alias-bomb.yaml"}


def check_jsonschema() -> Path:
    exe = Path(sys.executable).parent / "check-jsonschema"
    assert exe.exists(), "check-jsonschema is not installed: run `make install` (it is in the `test` extra)"
    return exe


@pytest.fixture(scope="module")
def schema_verdicts() -> dict[str, list[str]]:
    """file name -> check-jsonschema's errors for it (empty: valid), one run for all."""
    files = [p for p in GOOD + BAD if p.name not in NOT_RUN]
    r = subprocess.run(
        [str(check_jsonschema()), "--schemafile", str(SCHEMA), "-o", "json", *map(str, files)],
        capture_output=True, text=True, timeout=120,
    )
    report = json.loads(r.stdout)
    verdicts: dict[str, list[str]] = {p.name: [] for p in files}
    for err in report["errors"]:
        verdicts[Path(err["filename"]).name].append(f"{err['path']}: {err['message']}")
    for err in report["parse_errors"]:
        verdicts[Path(err["filename"]).name].append(f"parse error: {err.get('message', '')}")
    assert r.returncode == (1 if any(verdicts.values()) else 0), r.stderr
    return verdicts


def test_the_corpus_and_the_allow_list_match():
    assert len(GOOD) >= 5 and len(BAD) >= 60
    names = {p.name for p in BAD}
    assert set(FLEET_ONLY) <= names, f"allow-listed files that do not exist: {set(FLEET_ONLY) - names}"


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.name)
def test_good_file_passes_both(path, schema_verdicts):
    _, problems = validate_file(path)
    assert not problems, "\n".join(map(str, problems))
    assert schema_verdicts[path.name] == [], "schema rejects a file fleet accepts:\n" + "\n".join(schema_verdicts[path.name])


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_file_fails_both_unless_only_fleet_can_tell(path, schema_verdicts):
    _, problems = validate_file(path)
    assert problems, f"fleet validate accepts {path.name}"
    if path.name in NOT_RUN:
        return
    caught = bool(schema_verdicts[path.name])
    if path.name in FLEET_ONLY:
        assert not caught, (
            f"the schema now catches {path.name}: take it off FLEET_ONLY\n" + "\n".join(schema_verdicts[path.name])
        )
    else:
        assert caught, f"check-jsonschema accepts {path.name}, which fleet rejects:\n" + "\n".join(map(str, problems))


def test_map_keys_that_miss_the_pattern_are_checked_with_all_beneath_them(schema_verdicts):
    """The issue's example: 9 problems for fleet, and the schema no longer says ok,
    down to the values under a badly named key."""
    errors = "\n".join(schema_verdicts["map-key-holes.yaml"])
    for needle in ("'Web' does not match", "'admin_ui' does not match", "'NODE-ENV' does not match", "imagee", "99999"):
        assert needle in errors, errors


def walk_objects(node, path=()):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from walk_objects(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_objects(v, path + (i,))


def test_every_key_has_a_description():
    schema = fleet_schema()
    missing = []
    for path, node in walk_objects(schema):
        if set(path) & {"allOf", "if", "then", "else", "not"}:
            continue  # the rules across keys, not the keys themselves
        for key, sub in (node.get("properties") or {}).items():
            if not sub.get("description"):
                missing.append(".".join(map(str, path + (key,))))
    assert not missing, "keys without a description (add Field(description=...) in reconciler/load/schema.py): " + ", ".join(missing)
    assert all(d.get("description") for d in schema["$defs"].values())
    with_examples = [p for p, n in walk_objects(schema) if "examples" in n]
    assert len(with_examples) >= 15


def test_command_is_one_schema_so_an_empty_string_reads_as_too_short():
    import jsonschema

    validator = jsonschema.Draft202012Validator(fleet_schema())
    doc = {"fleet": "a", "agents": {"web": {"image": "x", "command": ""}}}
    (error,) = validator.iter_errors(doc)
    assert error.validator == "minLength", error.message
    assert list(error.absolute_path) == ["agents", "web", "command"]
