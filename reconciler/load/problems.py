"""Schema errors as people read them: pydantic's `ValidationError` -> one
`Problem` per mistake, at the line and column of the value (or key) at fault,
with what was expected, what was found and a "did you mean" where one fits.

Pure: works on the parsed document, its `Positions` and the error list.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from reconciler.core.errors import Problem
from reconciler.load.hints import one_typo
from reconciler.load.schema import FleetFile
from reconciler.load.yamldoc import Path_, Positions, describe, dotted


def concrete_types(ann: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return concrete_types(typing.get_args(ann)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(ann):
            out.extend(concrete_types(arg))
        return out
    return [ann]


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The pydantic model whose fields live at `path` in the document."""
    current: list[Any] = [FleetFile]
    for part in path:
        nxt: list[Any] = []
        for ann in current:
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                f = ann.model_fields.get(str(part))
                if f is not None:
                    nxt.extend(concrete_types(f.annotation))
            elif typing.get_origin(ann) is dict:
                nxt.extend(concrete_types(typing.get_args(ann)[1]))
            elif typing.get_origin(ann) is list:
                nxt.extend(concrete_types(typing.get_args(ann)[0]))
        current = nxt
    for ann in current:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return ann
    return None


def did_you_mean(word: str, candidates: typing.Iterable[str]) -> str:
    # 0.7: 'defualts', 'comand', 'prot', 'Modal' still match; 'nope' is not 'openai'
    options = list(candidates)
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.7)
    if not match and len(word) >= 3:  # short keys: a swap or one letter off scores low
        match = [c for c in options if one_typo(word.lower(), c.lower())][:1]
    return f"; did you mean '{match[0]}'?" if match else ""


UNION_EXPECT = {
    "command": "a list of strings or a string",
    "workspace": "a path, or a mapping with path, mode and branch",
}

TYPE_NAMES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
    "bool_type": "true or false",
    "float_type": "a number",
    "model_type": "a mapping",
    "int_from_float": "an integer",
}


def _walk(data: Any, loc: tuple) -> tuple[Path_, tuple, Any]:
    """Split a pydantic loc into the document path it resolves to, the rest, and
    the value found there."""
    current = data
    path: list[Any] = []
    for i, part in enumerate(loc):
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            current = current[part]
            path.append(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            path.append(part)
        else:
            return tuple(path), tuple(loc[i:]), current
    return tuple(path), (), current


def _is_branch(tag: Any) -> bool:
    return isinstance(tag, str) and (tag[:1].isupper() or "[" in tag or tag in ("str", "int", "bool", "float") or tag.startswith(("constrained-", "function-")))


def schema_problems(file: str, data: dict, pos: Positions, exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    unions: dict[Path_, list[tuple[tuple, ErrorDetails]]] = {}
    plain: list[tuple[Path_, tuple, Any, ErrorDetails]] = []
    for err in exc.errors(include_url=False):
        path, rest, value = _walk(data, tuple(err["loc"]))
        if rest and _is_branch(rest[0]) and not (rest == ("[key]",)):
            unions.setdefault(path, []).append((rest, err))
        else:
            plain.append((path, rest, value, err))
    for path, errs in unions.items():
        value = _walk(data, path)[2]
        want = "WorkspaceMap" if isinstance(value, dict) else ("list[" if isinstance(value, list) else None)
        chosen = [(r, e) for r, e in errs if want and r[0].startswith(want)]
        if isinstance(value, str):
            chosen = [(r, e) for r, e in errs if not r[0].startswith(("list[", "WorkspaceMap"))]
        if chosen:
            for rest, err in chosen:
                sub_path, sub_rest, sub_value = _walk(value, rest[1:])
                plain.append((path + sub_path, sub_rest, sub_value, err))
        else:
            line, col = pos.of(path)
            expect = UNION_EXPECT.get(str(path[-1]) if path else "", "a different kind of value")
            problems.append(Problem(file, line, col, dotted(path), f"expected {expect} (found {describe(value)})"))
    seen: set[tuple] = set()
    for path, rest, value, err in plain:
        problem = _one_problem(file, data, pos, path, rest, value, err)
        key = (problem.line, problem.col, problem.key, problem.message)
        if key not in seen:
            seen.add(key)
            problems.append(problem)
    return problems


def _one_problem(file: str, data: dict, pos: Positions, path: Path_, rest: tuple, value: Any, err: ErrorDetails) -> Problem:
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if rest == ("[key]",) or (rest and rest[-1] == "[key]"):
        line, col = pos.of(path, prefer_key=True)
        key = str(path[-1]) if path else ""
        return Problem(file, line, col, dotted(path), _name_message(key, etype, ctx))
    if etype == "extra_forbidden":
        line, col = pos.of(path, prefer_key=True)
        model = _model_at(path[:-1])
        hint = did_you_mean(str(path[-1]), model.model_fields if model else [])
        return Problem(file, line, col, dotted(path), f"unknown key{hint}" if hint else "unknown key")
    if etype == "missing":
        full = path + tuple(r for r in rest if not _is_branch(r))
        line, col = pos.of(path)
        return Problem(file, line, col, dotted(full), "required key is missing")
    line, col = pos.of(path)
    key = dotted(path)
    found = describe(value)
    if etype in TYPE_NAMES:
        return Problem(file, line, col, key, f"expected {TYPE_NAMES[etype]} (found {found})")
    if etype == "string_pattern_mismatch":
        return Problem(file, line, col, key, _name_message(value if isinstance(value, str) else "", etype, ctx))
    if etype == "string_too_long":
        return Problem(file, line, col, key, f"must be at most {ctx.get('max_length')} characters (found {len(value) if isinstance(value, str) else '?'})")
    if etype == "string_too_short":
        return Problem(file, line, col, key, "must not be empty")
    if etype in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        last = str(path[-1]) if path else ""
        if len(path) >= 2 and path[-2] == "ports" or last == "port":
            return Problem(file, line, col, key, f"port must be between 1 and 65535 (found {found})")
        bound = ctx.get("ge", ctx.get("le", ctx.get("gt", ctx.get("lt"))))
        word = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "more than", "less_than": "less than"}[etype]
        return Problem(file, line, col, key, f"must be {word} {bound} (found {found})")
    if etype == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = did_you_mean(str(value), options) if isinstance(value, str) else ""
        if isinstance(value, str) and value in options:  # `version: "1"`
            hint = f"; write {value} without quotes"
        return Problem(file, line, col, key, f"expected one of {', '.join(options)} (found {found}){hint}")
    if etype == "too_short":
        return Problem(file, line, col, key, f"must not be empty (found {found})")
    return Problem(file, line, col, key, f"{err['msg']} (found {found})")


def _name_message(name: str, etype: str, ctx: dict) -> str:
    pattern = str(ctx.get("pattern", ""))
    if "A-Za-z0-9._-" in pattern:
        return f"must be a Modal app name: 1 to 63 letters, digits, '.', '_' or '-' (found {name!r})"
    if "A-Za-z_" in pattern:
        return f"must be an environment variable name: letters, digits and '_', not starting with a digit (found {name!r})"
    if etype == "string_too_long":
        return f"must be at most 63 characters (found {len(name)})"
    if len(name) > 63:
        return f"names must be at most 63 characters (found {len(name)})"
    return f"must be a lowercase DNS label: a-z, 0-9 and '-', starting and ending with a letter or digit (found {name!r})"

