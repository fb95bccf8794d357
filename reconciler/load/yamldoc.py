"""Reading fleet.yaml: bytes -> plain Python values, with the line and column of
every value and every mapping key.

YAML is composed into nodes with ruamel.yaml and converted by hand, so that each
value keeps its position, duplicate keys are all reported, and alias expansion is
bounded (an alias bomb is refused, not expanded). Every problem found here is a
`Problem` with file, line and column; the only I/O is reading the one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from reconciler.core.errors import FleetError, Problem, display_path

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 64

Path_ = tuple[Any, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"


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


class _ValueBuilder:
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
        head = text[: exc.position]
        line = head.count("\n") + 1
        col = exc.position - (head.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return None, Positions(), [Problem(shown, line, col, "", f"control character not allowed in YAML (found 0x{char:02x})")]
    except YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        return None, Positions(), [Problem(shown, 1, 1, "", f"YAML error: {first}")]
    if node is None or (isinstance(node, ScalarNode) and node.value == "" and (node.tag or "").endswith(":null")):
        return None, Positions(), [Problem(shown, 1, 1, "", "file is empty; it needs at least `fleet: <name>`")]
    builder = _ValueBuilder(shown)
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
