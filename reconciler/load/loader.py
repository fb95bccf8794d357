"""Load: fleet.yaml text -> a validated, fully resolved `Desired`.

Every problem is collected (not just the first) and reported as
`path:line:col: key.path: what is wrong (found X)`. Nothing here talks to Docker
or Modal; the only I/O is reading the file and hashing local build contexts.

YAML is composed into nodes with ruamel.yaml and converted by hand, so that each
value keeps its position, duplicate keys are all reported, and alias expansion is
bounded (an alias bomb is refused, not expanded).
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from reconciler.core import labels
from reconciler.core.errors import FleetError, Problem, ValidationFailed, display_path
from reconciler.core.model import (
    MODAL_ROUTER_PORT,
    BuildSpec,
    Desired,
    DesiredAgent,
    DesiredHost,
    ImageRef,
    ModalOptions,
    ProxySettings,
    WorkspaceSpec,
)
from reconciler.load import pathrules
from reconciler.load.buildctx import context_hash  # noqa: F401  (savedplan imports it from here)
from reconciler.routing.table import service_urls
from reconciler.load.spec import BUILTIN_GRANTS, MODAL_ONLY, FleetFile

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 64

Path_ = tuple[Any, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


def default_file() -> Path:
    return Path(os.environ.get("FLEET_FILE") or "fleet.yaml")


# --------------------------------------------------------------------------- YAML


@dataclass
class Positions:
    """Where each value (and each mapping key) of the document stands, 1-based."""

    value: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Path_, prefer_key: bool = False) -> tuple[int, int]:
        path = tuple(path)
        while True:
            table = (self.key, self.value) if prefer_key else (self.value, self.key)
            for t in table:
                if path in t:
                    return t[path]
            if not path:
                return (1, 1)
            path = path[:-1]


class _Builder:
    """Turns composed YAML nodes into plain Python values, recording positions."""

    def __init__(self, file: str):
        self.file = file
        self.pos = Positions()
        self.problems: list[Problem] = []
        self.count = 0

    def _problem(self, node: Node, path: Path_, message: str) -> None:
        m = node.start_mark
        self.problems.append(Problem(self.file, m.line + 1, m.column + 1, dotted(path), message))

    def build(self, node: Node, path: Path_ = (), depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node.start_mark, f"more than {MAX_NODES} values after expanding aliases")
        if depth > MAX_DEPTH:
            raise _TooBig(node.start_mark, f"nested more than {MAX_DEPTH} levels deep after expanding aliases")
        m = node.start_mark
        self.pos.value.setdefault(path, (m.line + 1, m.column + 1))
        if isinstance(node, MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, SequenceNode):
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        return self._scalar(node, path)

    def _merged(self, node: MappingNode, path: Path_, depth: int, report: bool) -> dict[str, tuple[Node, Node]]:
        """The (key node, value node) pairs that `<<` keys of `node` bring in,
        first source first; a merged mapping's own merges are resolved too."""
        out: dict[str, tuple[Node, Node]] = {}
        if depth > MAX_DEPTH:
            raise _TooBig(node.start_mark, f"merges nested more than {MAX_DEPTH} levels deep")
        for knode, vnode in node.value:
            if knode.tag != MERGE_TAG:
                continue
            sources = vnode.value if isinstance(vnode, SequenceNode) else [vnode]
            if report and not all(isinstance(src, MappingNode) for src in sources):
                wrong = next(src for src in sources if not isinstance(src, MappingNode))
                m = knode.start_mark
                found = "a list" if isinstance(wrong, SequenceNode) else f"{wrong.value!r}"
                self.problems.append(
                    Problem(self.file, m.line + 1, m.column + 1, dotted(path), f"'<<' must merge a mapping or a list of mappings (found {found})")
                )
            for src in sources:
                self.count += 1
                if self.count > MAX_NODES:
                    raise _TooBig(knode.start_mark, f"more than {MAX_NODES} values after expanding merges")
                if not isinstance(src, MappingNode):
                    continue
                pairs = [(k, v) for k, v in src.value if k.tag != MERGE_TAG]
                pairs.extend(self._merged(src, path, depth + 1, report=False).values())
                for knode2, vnode2 in pairs:
                    self.count += 1
                    if self.count > MAX_NODES:
                        raise _TooBig(knode2.start_mark, f"more than {MAX_NODES} values after expanding merges")
                    if isinstance(knode2, ScalarNode) and isinstance(knode2.value, str):
                        out.setdefault(knode2.value, (knode2, vnode2))
        return out

    def _null_at_key(self, knode: Node, vnode: Node, path: Path_) -> None:
        """An empty value (`web:` with nothing after it) is placed by the parser
        where the next token starts, often the next line; point at the key."""
        if isinstance(vnode, ScalarNode) and vnode.value == "" and (vnode.tag or "").endswith(":null"):
            self.pos.value.setdefault(path, (knode.start_mark.line + 1, knode.start_mark.column + 1))

    def _mapping(self, node: MappingNode, path: Path_, depth: int) -> dict:
        out: dict[str, Any] = {}
        first: dict[str, int] = {}
        pairs = list(node.value)
        merged = self._merged(node, path, depth, report=True)
        own_keys = {str(k.value) for k, _ in pairs if isinstance(k, ScalarNode) and k.tag != MERGE_TAG}
        # the mapping's own keys win over merged ones
        for key, (knode, vnode) in merged.items():
            if key in own_keys:
                continue
            self.pos.key.setdefault(path + (key,), (knode.start_mark.line + 1, knode.start_mark.column + 1))
            self._null_at_key(knode, vnode, path + (key,))
            out[key] = self.build(vnode, path + (key,), depth + 1)
        own: set[str] = set()
        for knode, vnode in pairs:
            if knode.tag == MERGE_TAG:
                continue
            if not isinstance(knode, ScalarNode):
                self._problem(knode, path, "keys must be plain strings (found a complex key)")
                continue
            key = self._scalar(knode, path)
            if key is None or isinstance(key, bool) or not isinstance(key, (str, int, float)):
                self._problem(knode, path, f"keys must be strings (found {describe(key)})")
                continue
            key = str(key)
            line = knode.start_mark.line + 1
            if key in own:
                self._problem(knode, path + (key,), f"duplicate key (first defined on line {first[key]})")
                continue
            own.add(key)
            first[key] = line
            self.pos.key[path + (key,)] = (line, knode.start_mark.column + 1)
            self._null_at_key(knode, vnode, path + (key,))
            out[key] = self.build(vnode, path + (key,), depth + 1)
        return out

    def _scalar(self, node: Node, path: Path_) -> Any:
        tag = node.tag or ""
        value = node.value
        if getattr(node, "style", None) == ">" and isinstance(value, str):
            # ruamel's round-trip scanner marks each fold of a `>` scalar with BEL
            # (\a) for re-dumping; its constructor strips them, so must we
            value = value.replace("\a", "")
        if tag.endswith(":null"):
            return None
        if tag.endswith(":bool"):
            return value.lower() == "true"
        if tag.endswith((":int", ":float")) and _is_env_value(path):
            return value  # as written: `VERSION: 1.10` is "1.10", `ZIP: 01234` is "01234"
        if tag.endswith(":int"):
            try:
                text = value.replace("_", "")
                if text.startswith(("0o", "0x", "0b")):
                    return int(text, 0)
                return int(text)
            except ValueError:
                return value
        if tag.endswith(":float"):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                return value
        if tag.startswith("!") and not tag.startswith("!!"):
            self._problem(node, path, f"custom YAML tags are not supported (found {tag})")
        return value


def _is_env_value(path: Path_) -> bool:
    """An env value or build arg: numbers there keep the text the user wrote."""
    n = len(path)
    if n == 3 and path[:2] == ("defaults", "env"):
        return True
    if n == 4 and path[0] in ("agents", "hosts") and path[2] == "env":
        return True
    if n == 4 and path[:3] == ("defaults", "build", "args"):
        return True
    return n == 5 and path[0] in ("agents", "hosts") and path[2:4] == ("build", "args")


class _TooBig(Exception):
    def __init__(self, mark: Any, reason: str):
        self.mark = mark
        self.reason = reason


class _BoundedComposer(Composer):
    """ruamel's composer, stopped past MAX_NODES nodes or MAX_DEPTH levels.

    A 1 MiB file can hold 250,000 list items (about 12 s to compose) or nest
    deeper than Python's stack (RecursionError); fleet.yaml never needs either,
    so both are refused while composing. Reused anchor names are legal YAML and
    not worth a warning on stderr.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False
        self.nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if not self.parser.check_event(AliasEvent):
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise _TooBig(self.parser.peek_event().start_mark, f"more than {MAX_NODES} values")
            if self.depth >= MAX_DEPTH:
                raise _TooBig(self.parser.peek_event().start_mark, f"nested more than {MAX_DEPTH} levels deep")
        return super().compose_node(parent, index)


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def describe(value: Any) -> str:
    """A short description of a value for 'found X'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _tab_problems(file: str, text: str) -> list[Problem]:
    problems = []
    for n, line_text in enumerate(text.splitlines(), 1):
        indent = line_text[: len(line_text) - len(line_text.lstrip(" \t"))]
        if "\t" in indent:
            problems.append(Problem(file, n, indent.index("\t") + 1, "", "tab character in indentation; YAML indents with spaces"))
    return problems


def read_document(path: Path) -> tuple[Any, Positions, list[Problem]]:
    """Read and parse the file. Returns (data, positions, problems)."""
    shown = display_path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise FleetError(f"{shown}: no such file (pass one with -f FILE, or set FLEET_FILE)") from None
    except OSError as exc:
        raise FleetError(f"{shown}: cannot read: {exc.strerror}") from None
    if path.is_dir():
        raise FleetError(f"{shown}: is a directory, not a fleet.yaml file")
    too_large = f"file is too large (more than {MAX_FILE_BYTES} bytes; the limit is {MAX_FILE_BYTES})"
    if st.st_size > MAX_FILE_BYTES:
        return None, Positions(), [Problem(shown, 1, 1, "", too_large.replace(f"more than {MAX_FILE_BYTES}", str(st.st_size)))]
    try:
        with path.open("rb") as fh:  # bounded: a pipe or /dev/zero has no size
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FleetError(f"{shown}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        return None, Positions(), [Problem(shown, 1, 1, "", too_large)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, Positions(), [Problem(shown, line, col, "", f"file is not UTF-8 text (found byte 0x{raw[exc.start]:02x})")]
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip() or all(ln.strip().startswith("#") or not ln.strip() for ln in text.splitlines()):
        return None, Positions(), [Problem(shown, 1, 1, "", "file is empty; it needs at least `fleet: <name>`")]
    yaml = YAML(typ="rt")
    yaml.Composer = _BoundedComposer
    try:
        node = yaml.compose(text)
    except _TooBig as big:
        m = big.mark
        return None, Positions(), [Problem(shown, m.line + 1, m.column + 1, "", f"document too large or too deep ({big.reason}); refusing it")]
    except MarkedYAMLError as exc:
        # A tab in indentation is the usual cause; a tab inside a block scalar
        # (pasted code in a message) or a flow collection is fine, so tabs are
        # only blamed when the document does not parse.
        tabs = _tab_problems(shown, text)
        if tabs:
            return None, Positions(), tabs
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            what = f"{exc.context}, {exc.problem}"
        start = exc.context_mark
        if start is not None and mark is not None and start.line != mark.line and (exc.context or "").startswith("while "):
            what += f" (it started at line {start.line + 1}, column {start.column + 1})"
        return None, Positions(), [Problem(shown, line, col, "", f"YAML syntax error: {what}")]
    except ReaderError as exc:
        before = text[: exc.position]
        line = before.count("\n") + 1
        col = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return None, Positions(), [Problem(shown, line, col, "", f"control character not allowed in YAML (found 0x{char:02x})")]
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        return None, Positions(), [Problem(shown, 1, 1, "", f"YAML error: {first}")]
    if node is None or (isinstance(node, ScalarNode) and node.value == "" and (node.tag or "").endswith(":null")):
        return None, Positions(), [Problem(shown, 1, 1, "", "file is empty; it needs at least `fleet: <name>`")]
    builder = _Builder(shown)
    try:
        data = builder.build(node)
    except _TooBig as big:
        m = big.mark
        return None, Positions(), [Problem(shown, m.line + 1, m.column + 1, "", f"document too large or too deep ({big.reason}); refusing it")]
    if not isinstance(data, dict):
        return None, builder.pos, builder.problems + [
            Problem(shown, node.start_mark.line + 1, node.start_mark.column + 1, "", f"the top level must be a mapping with `fleet:`, `agents:`, ... (found {describe(data)})")
        ]
    return data, builder.pos, builder.problems


# --------------------------------------------------------------------------- schema errors


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
        from reconciler.load.hints import one_typo

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


def _schema_problems(file: str, data: dict, pos: Positions, exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    unions: dict[Path_, list[tuple[tuple, dict]]] = {}
    plain: list[tuple[Path_, tuple, Any, dict]] = []
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


def _one_problem(file: str, data: dict, pos: Positions, path: Path_, rest: tuple, value: Any, err: dict) -> Problem:
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


# --------------------------------------------------------------------------- semantic checks


def _semantic_problems(file: str, base: Path, data: dict, pos: Positions, path: Path | None = None) -> list[Problem]:
    problems: list[Problem] = []

    def add(path: Path_, message: str, prefer_key: bool = False) -> None:
        line, col = pos.of(path, prefer_key=prefer_key)
        problems.append(Problem(file, line, col, dotted(path), message))

    def mapping(value: Any) -> dict:
        return value if isinstance(value, dict) else {}

    hosts = mapping(data.get("hosts"))
    agents = mapping(data.get("agents"))
    defaults = mapping(data.get("defaults"))
    user_grants = mapping(data.get("grants"))
    known_grants = set(BUILTIN_GRANTS) | set(user_grants)
    default_image = bool(defaults.get("image") or defaults.get("build"))
    if defaults.get("image") and defaults.get("build"):
        add(("defaults", "build"), "set image or build, not both")

    def listed(value: Any) -> list[tuple[int, Any]]:
        # a string is a schema error already; do not walk it letter by letter
        return list(enumerate(value)) if isinstance(value, list) else []

    for name in user_grants:
        if name in BUILTIN_GRANTS:
            add(("grants", name), f"'{name}' is a built-in grant; pick another name for a user-defined one", prefer_key=True)

    for hname, host in hosts.items():
        if not isinstance(host, dict):
            continue  # the schema check already says it must be a mapping
        provider = host.get("provider", "docker")
        if host.get("image") and host.get("build"):
            add(("hosts", hname, "build"), "set image or build, not both")
        if not (host.get("image") or host.get("build") or default_image):
            add(("hosts", hname), "no image: set image or build on the host, or defaults.image", prefer_key=True)
        if provider == "modal" and "capabilities" in host:
            add(("hosts", hname, "capabilities"), "only valid for provider: docker (a Modal sandbox sets its own)", prefer_key=True)
        if provider == "docker":
            for key in MODAL_ONLY:
                if key in host:
                    add(("hosts", hname, key), "only valid for provider: modal", prefer_key=True)
        _check_paths(add, base, ("hosts", hname), host, path)

    claimed: dict[str, dict[int, tuple[str, str]]] = {}
    for aname, agent in agents.items():
        if not isinstance(agent, dict):
            continue  # the schema check already says it must be a mapping
        where = ("agents", aname)
        if aname in hosts:  # their workspace copies and worktree branches would be one
            add(where, f"agent '{aname}' has the name of host '{aname}'; give one of them another name", prefer_key=True)
        host_name = agent.get("host")
        if host_name is not None and not isinstance(host_name, str):
            pass  # a wrong type for host: is a schema problem; nothing more to check here
        elif host_name is not None:
            if host_name not in hosts:
                known = ", ".join(sorted(hosts)) or "none declared"
                add(where + ("host",), f"host '{host_name}' is not declared under hosts: (known: {known}){did_you_mean(host_name, hosts)}")
            else:
                for key in ("image", "build", "workspace"):
                    if key in agent:
                        add(where + (key,), f"not allowed on an agent of shared host '{host_name}': set it on hosts.{host_name}", prefer_key=True)
                if mapping(hosts[host_name]).get("provider") == "modal" and "capabilities" in agent:
                    add(where + ("capabilities",), f"not available on Modal host '{host_name}' (a Modal sandbox sets its own)", prefer_key=True)
                if mapping(hosts[host_name]).get("provider") == "modal" and (agent.get("grants") or defaults.get("grants")):
                    source = "" if agent.get("grants") else " (from defaults.grants)"
                    add(where + ("grants",), f"grants are not available on Modal host '{host_name}'{source} (a sandbox cannot reach this machine's credential proxy)", prefer_key=True)
        else:
            if agent.get("image") and agent.get("build"):
                add(where + ("build",), "set image or build, not both")
            if not (agent.get("image") or agent.get("build") or default_image):
                add(where, "no image: set image or build on the agent, or defaults.image", prefer_key=True)
            _check_paths(add, base, where, agent, path)
        ports = mapping(agent.get("ports"))
        owner = host_name if isinstance(host_name, str) and host_name in hosts else None
        scope = claimed.setdefault(f"host:{owner}" if owner else f"agent:{aname}", {})
        for service, port in ports.items():
            if not isinstance(port, int) or isinstance(port, bool):
                continue
            if owner and port == MODAL_ROUTER_PORT and mapping(hosts[owner]).get("provider") == "modal":
                add(where + ("ports", service), f"port {port} is taken on Modal host '{owner}' by fleet's port router; use another port")
            elif port in scope:
                other_agent, other_service = scope[port]
                if owner:
                    add(where + ("ports", service), f"port {port} on host '{owner}' is already claimed by agent '{other_agent}' ({other_service}); ports are unique per host")
                else:
                    add(where + ("ports", service), f"port {port} is already used by service '{other_service}' of this agent")
            else:
                scope[port] = (aname, service)
        for idx, grant in listed(agent.get("grants")):
            if isinstance(grant, str) and grant not in known_grants:
                add(where + ("grants", idx), f"unknown grant '{grant}' (built in: {', '.join(BUILTIN_GRANTS)}; or define it under grants:){did_you_mean(grant, known_grants)}")
    for idx, grant in listed(defaults.get("grants")):
        if isinstance(grant, str) and grant not in known_grants:
            add(("defaults", "grants", idx), f"unknown grant '{grant}'{did_you_mean(grant, known_grants)}")
    _check_paths(add, base, ("defaults",), defaults)
    return problems


def _check_paths(add, base: Path, where: Path_, section: dict, fleet_file: Path | None = None) -> None:
    ws = section.get("workspace")
    ws_path = ws.get("path") if isinstance(ws, dict) else ws
    if isinstance(ws_path, str) and ws_path:
        key = where + (("workspace", "path") if isinstance(ws, dict) else ("workspace",))
        shared = (not isinstance(ws, dict) or ws.get("mode", "shared") == "shared") and section.get("provider") != "modal"
        try:
            p = pathrules.real(base / ws_path)
        except pathrules.PathLoop:
            add(key, f"symlink loop: {ws_path!r} cannot be resolved")
            p = None
        if p is None:
            pass
        elif not p.exists():
            add(key, f"directory does not exist (found {ws_path!r}, resolved to {p})")
        elif not p.is_dir():
            add(key, f"not a directory (found {ws_path!r})")
        elif (why := pathrules.workspace_refusal(p)) is not None:
            add(key, f"refused as a workspace: {why}")
        elif isinstance(ws, dict) and ws.get("mode") == "worktree" and not (p / ".git").exists():
            add(where + ("workspace", "mode"), f"worktree mode needs a git repository, and {ws_path!r} is not one (no .git)")
        elif shared and fleet_file is not None and (why := pathrules.linked_file_refusal(p, fleet_file)) is not None:
            add(key, why)
    build = section.get("build")
    if isinstance(build, dict):
        ctx = build.get("context", ".")
        if isinstance(ctx, str):
            key = where + ("build", "context")
            try:
                cdir = pathrules.real(base / ctx)
            except pathrules.PathLoop:
                add(key, f"symlink loop: {ctx!r} cannot be resolved")
                return
            if not cdir.is_dir():
                add(key, f"build context directory does not exist (found {ctx!r})")
            elif (why := pathrules.context_refusal(cdir)) is not None:
                add(key, f"refused as a build context: {why}")
            else:
                df = build.get("dockerfile", "Dockerfile")
                if isinstance(df, str) and not (cdir / df).is_file():
                    add(where + ("build", "dockerfile"), f"Dockerfile not found in the build context (found {df!r})")


# --------------------------------------------------------------------------- resolve


def _image(fleet: str, base: Path, image: str | None, build: Any) -> ImageRef:
    if build is not None:
        ctx = (base / build.context).resolve()
        digest = context_hash(ctx, build.dockerfile, dict(build.args))
        return ImageRef(
            ref=labels.build_image(fleet, digest),
            build=BuildSpec(context=ctx, dockerfile=build.dockerfile, args=dict(build.args), context_hash=digest),
        )
    assert image is not None
    return ImageRef(ref=image)


def _workspace(base: Path, ws: Any, file: Path, uploaded: bool = False) -> WorkspaceSpec | None:
    if ws is None:
        return None
    if isinstance(ws, str):
        path, mode, branch = (base / ws).resolve(), "shared", None
    else:
        path, mode, branch = (base / ws.path).resolve(), ws.mode, ws.branch
    # copy and worktree modes mount another directory, and Modal uploads a copy:
    # the fleet file an agent could reach there is not the one fleet reads
    read_only = pathrules.protected_files(path, [file.resolve()]) if mode == "shared" and not uploaded else ()
    return WorkspaceSpec(path=path, mode=mode, branch=branch, read_only=read_only)


def _command(cmd: Any) -> tuple[str, ...] | None:
    if cmd is None:
        return None
    if isinstance(cmd, str):
        return ("/bin/sh", "-c", cmd)
    return tuple(cmd)


def resolve(spec: FleetFile, file: Path) -> Desired:
    base = file.parent.resolve()
    fleet = spec.fleet
    d = spec.defaults
    proxy = ProxySettings(port=spec.proxy.port, bind=spec.proxy.bind, tls=spec.proxy.tls)
    hosts: dict[str, DesiredHost] = {}
    for name, h in spec.hosts.items():
        # disabled agents keep their ports: toggling `enabled` must not replace the host
        ports = sorted({p for a in spec.agents.values() if a.host == name for p in a.ports.values()})
        modal = None
        if h.provider == "modal":
            modal = ModalOptions(
                app=h.app, environment=h.environment, timeout=h.timeout or 86400, idle_timeout=h.idle_timeout,
                cpu=h.cpu, memory=h.memory, region=h.region, restore=h.restore,
            )
        image = _image(fleet, base, h.image or (None if h.build else d.image), h.build or (None if h.image else d.build))
        hosts[name] = DesiredHost(
            name=name, provider=h.provider, image=image, workspace=_workspace(base, h.workspace, file, uploaded=h.provider == "modal"),
            env=dict(h.env), ports=tuple(ports), modal=modal,
        )
    agents: dict[str, DesiredAgent] = {}
    for name, a in spec.agents.items():
        host = hosts.get(a.host) if a.host else None
        env = dict(d.env)
        if host is not None:
            env.update(host.env)
        env.update(a.env)
        env.update({"FLEET_NAME": fleet, "FLEET_AGENT": name, "FLEET_HOST": a.host or name})
        for svc, url in service_urls(name, a.ports, proxy).items():
            env[labels.env_name(svc)] = url
        if host is not None:
            image = host.image
            workspace = host.workspace
        else:
            own_image = a.image or (None if a.build else d.image)
            own_build = a.build or (None if a.image else d.build)
            image = _image(fleet, base, own_image, own_build)
            workspace = _workspace(base, a.workspace, file)
        agents[name] = DesiredAgent(
            name=name,
            host=a.host,
            provider=host.provider if host else "docker",
            image=image,
            workspace=workspace,
            command=_command(a.command if a.command is not None else d.command),
            message=a.message,
            env=env,
            ports=dict(a.ports),
            grants=tuple(dict.fromkeys(list(d.grants) + list(a.grants))),
            grant_defs={
                g: spec.grants[g].model_dump() for g in dict.fromkeys(list(d.grants) + list(a.grants)) if g in spec.grants
            },
            restart=a.restart or d.restart or "always",
            enabled=a.enabled,
            capabilities=tuple(sorted(set(a.capabilities) | set(spec.hosts[a.host].capabilities if host is not None else ()))),
        )
    grants = {k: v.model_dump() for k, v in spec.grants.items()}
    return Desired(fleet=fleet, file=file.resolve(), hosts=hosts, agents=agents, proxy=proxy, grants=grants)


# --------------------------------------------------------------------------- entry points


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
        problems = problems + _schema_problems(shown, data, pos, exc)
    problems = problems + _semantic_problems(shown, path.parent.resolve(), data, pos, path)
    from reconciler.load.hints import misindented

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
