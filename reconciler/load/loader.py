"""Load: fleet.yaml text -> a validated, fully resolved `Desired`.

Every problem is collected (not just the first) and reported as
`path:line:col: key.path: what is wrong (found X)`. Nothing here talks to Docker
or Modal; the only I/O is reading the file, looking at the paths it names and
hashing local build contexts. The stages, each in its own module:

- `yamldoc`: the file -> plain values with the position of each (`read_document`);
- `problems`: pydantic's schema errors -> one `Problem` each (`schema_problems`);
- `checks`: what the schema cannot say: references, ports, paths (`semantic_problems`);
- `hints`: better words for common slips (a misindented agent setting);
- `resolve`: a valid `FleetFile` -> `Desired`.

This module is the entry point (`load`, `validate_file`) and keeps the names
other layers import from it (`read_document`, `did_you_mean`, `concrete_types`,
`context_hash`, `default_file`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from reconciler.core.errors import Problem, ValidationFailed, display_path
from reconciler.core.model import Desired
from reconciler.load.buildctx import context_hash
from reconciler.load.checks import semantic_problems
from reconciler.load.hints import misindented
from reconciler.load.problems import concrete_types, did_you_mean, schema_problems
from reconciler.load.resolve import resolve
from reconciler.load.schema import FleetFile
from reconciler.load.yamldoc import MAX_FILE_BYTES, Positions, describe, dotted, read_document

__all__ = [
    "MAX_FILE_BYTES", "Positions", "concrete_types", "context_hash", "default_file", "describe",
    "did_you_mean", "dotted", "load", "read_document", "resolve", "validate_file",
]


def default_file() -> Path:
    return Path(os.environ.get("FLEET_FILE") or "fleet.yaml")


def validate_file(path: Path) -> tuple[FleetFile | None, list[Problem]]:
    """Parse and check a file; returns the spec (when valid) and every problem."""
    data, pos, problems = read_document(path)
    if data is None:
        return None, problems
    shown = display_path(path)
    spec: FleetFile | None = None
    # top-level `x-...` keys are free-form (as in Docker Compose): a place for anchors
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        spec = FleetFile.model_validate(data)
    except ValidationError as exc:
        problems = problems + schema_problems(shown, data, pos, exc)
    problems = problems + semantic_problems(shown, path.parent.resolve(), data, pos, path)
    problems = misindented(shown, data, pos, problems)
    problems.sort(key=lambda p: (p.line, p.col))
    return (spec if not problems else None), problems


def load(path: Path | None = None) -> Desired:
    """Load, validate and resolve a fleet.yaml; raises ValidationFailed listing
    every problem."""
    path = Path(path) if path is not None else default_file()
    spec, problems = validate_file(path)
    if problems or spec is None:
        raise ValidationFailed(problems)
    return resolve(spec, path)
