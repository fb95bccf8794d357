"""`fleet status -o json` from hand-built states (no engine): data, not display
strings, against schemas/status-output.schema.json; and the text table built
from the same rows (piped: full cells; narrow terminal: columns dropped, URLs kept)."""

from __future__ import annotations

import json

from reconciler.gitops import output
from reconciler.view.status import status_lines, status_rows
from tests.conftest import ROOT

from .test_output import world

SCHEMA = ROOT / "schemas" / "status-output.schema.json"


def validate(doc: dict) -> None:
    import jsonschema

    jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).validate(doc)


def test_status_document_is_data_and_matches_its_schema():
    import jsonschema

    desired, observed = world()
    same = next(a for a in observed.agents if a.name == "same")
    rows = status_rows(desired, observed, messages={"same": {"container": same.id, "state": "delivered"}})
    doc = output.status_document(desired, rows)
    validate(doc)
    assert doc["format_version"] == output.STATUS_FORMAT_VERSION == 2 and doc["kind"] == "fleet-status"
    by = {r["agent"]: r for r in doc["agents"]}
    assert (by["changed"]["state"], by["changed"]["outdated"]) == ("running", True)
    assert (by["gone"]["state"], by["gone"]["in_file"]) == ("running", False)
    assert (by["off"]["enabled"], by["new"]["state"], by["new"]["id"]) == (False, "missing", None)
    assert (by["crashed"]["state"], by["crashed"]["exit_code"]) == ("exited", 137)
    assert by["joiner"]["host"] == "pod" and by["same"]["host"] is None
    assert by["same"]["message"] is None  # no message: null, not "-"
    text = json.dumps(doc)
    for display in ("(private)", "(outdated)", "(not in fleet.yaml)", '"-"', "disabled"):
        assert display not in text, display
    for bad in ({"host": "(private)"}, {"state": 3}, {"message": "-"}, {"outdated": "yes"}):
        row = {**doc["agents"][0], **bad}
        try:
            validate({**doc, "agents": [row]})
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"schema accepted {bad}")


def test_text_table_shows_the_words_and_never_truncates():
    desired, observed = world()
    rows = status_rows(desired, observed)
    piped = status_lines(rows, None).plain.splitlines()
    assert len(piped) == 1 + len(rows) and "…" not in "\n".join(piped)
    cells = {ln.split()[0]: ln for ln in piped[1:]}
    assert "(private)" in cells["same"] and "pod" in cells["joiner"]
    assert "running (outdated)" in cells["changed"] and "exited (137)" in cells["crashed"]
    assert "disabled" in cells["off"] and "(not in fleet.yaml)" in cells["gone"]
    narrow = status_lines(rows, 40).plain.splitlines()
    assert narrow[0].split() == ["AGENT", "STATE", "URLS"]
