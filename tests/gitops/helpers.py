"""Shared helpers for the GitOps tests: fleet files, container listings, schemas."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.conftest import ROOT

PLAN_SCHEMA = ROOT / "schemas" / "plan-output.schema.json"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def containers(client, fleet: str) -> dict[str, tuple[str, str]]:
    """`agent:x` / `host:y` -> (container id, status) for everything the fleet owns."""
    out = {}
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        lab = c.labels
        key = f"{lab['dev.fleet.kind']}:{lab.get('dev.fleet.agent') or lab.get('dev.fleet.host')}"
        assert key not in out, f"duplicate container for {key}"
        out[key] = (c.id, c.status)
    return out


def validate_plan_output(doc: dict) -> None:
    import jsonschema

    schema = json.loads(PLAN_SCHEMA.read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)
