"""`fleet fmt`: fleet.yaml in canonical order and style, comments kept.

Reviews stay clean when every file orders its keys the same way. Two passes:

1. a ruamel.yaml round trip normalises the style (2-space indentation, block
   sequences indented under their key, flow mappings' keys in canonical order);
2. block mappings are reordered line by line, so each comment travels with the
   key it sits above (ruamel attaches a comment to the value *before* it, which
   would move it to the wrong key). Blank lines stay where they were.

Canonical order: top level `fleet, version, defaults, proxy, grants, hosts,
agents`; inside a section, the field order of its model in the fleet.yaml schema
(load/schema.py). Names under `hosts:`, `agents:`, `env:`, `ports:` keep the order
the user chose.

Formatting never changes meaning: the result is checked to load to the same data,
and the passes repeat until the text no longer changes (so fmt is idempotent).
"""

from __future__ import annotations

import io
import typing
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.core.errors import FleetError
from reconciler.state.home import write_atomic
from reconciler.load.loader import concrete_types
from reconciler.load.schema import FleetFile

ROOT_ORDER = ("fleet", "version", "defaults", "proxy", "grants", "hosts", "agents")
INDENT = 2


# --------------------------------------------------------------------------- key order


_models = concrete_types


def _types_at(path: tuple[str, ...]) -> list[Any]:
    current: list[Any] = [FleetFile]
    for part in path:
        nxt: list[Any] = []
        for ann in current:
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                f = ann.model_fields.get(part)
                if f is not None:
                    nxt.extend(_models(f.annotation))
            elif typing.get_origin(ann) is dict:
                nxt.extend(_models(typing.get_args(ann)[1]))
        current = nxt
    return current


def key_order(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The canonical key order of the mapping at `path`, or None when its keys
    are names the user orders (agents, hosts, env, ports, ...)."""
    if not path:
        return ROOT_ORDER
    for ann in _types_at(path):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return tuple(ann.model_fields)
    return None


def _rank(order: tuple[str, ...], key: Any) -> int:
    # keys outside the model (a `<<` merge) come first, where YAML readers expect them
    return order.index(key) + 1 if key in order else 0


# --------------------------------------------------------------------------- pass 1: ruamel


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never fold long strings
    y.indent(mapping=INDENT, sequence=INDENT + 2, offset=INDENT)
    return y


def _order_flow(data: Any, path: tuple[str, ...]) -> None:
    """Flow mappings (`{path: ., mode: copy}`) carry no comments inside, so their
    keys can be reordered on the loaded document directly."""
    if isinstance(data, CommentedMap):
        order = key_order(path)
        if order is not None and data.fa.flow_style():
            keys = sorted(data.keys(), key=lambda k: _rank(order, k))
            if keys != list(data.keys()):
                items = [(k, data[k]) for k in keys]
                for k in keys:
                    del data[k]
                for k, v in items:
                    data[k] = v
        for k, v in data.items():
            _order_flow(v, path + (str(k),))
    elif isinstance(data, CommentedSeq):
        for item in data:
            _order_flow(item, path)


def restyle(text: str) -> str:
    y = _yaml()
    data = y.load(text)
    _order_flow(data, ())
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


# --------------------------------------------------------------------------- pass 2: block order


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


@dataclass
class _Block:
    key: Any
    blank: list[str] = field(default_factory=list)  # blank lines above: they stay in place
    comments: list[str] = field(default_factory=list)  # comments above: they move with the key
    body: list[str] = field(default_factory=list)
    trailing: list[str] = field(default_factory=list)  # deeper comments after the body


class _Reorderer:
    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.memo: dict[int, int] = {}

    def last_line(self, node: Node) -> int:
        """The last line holding content of `node` (0-based)."""
        if id(node) not in self.memo:
            self.memo[id(node)] = self._last_line(node)
        return self.memo[id(node)]

    def _last_line(self, node: Node) -> int:
        if isinstance(node, ScalarNode):
            if node.value == "" and node.style is None:
                return node.start_mark.line
            end = node.end_mark
            return end.line if end.column > 0 else end.line - 1
        if getattr(node, "flow_style", False):
            return node.end_mark.line
        last = node.start_mark.line
        if isinstance(node, MappingNode):
            for k, v in node.value:
                last = max(last, self.last_line(k), self.last_line(v))
        elif isinstance(node, SequenceNode):
            for v in node.value:
                last = max(last, self.last_line(v))
        return last

    def mapping(
        self, node: MappingNode, start: int, path: tuple[str, ...], root: bool, depth: int
    ) -> tuple[list[str], list[str], int]:
        """Render a block mapping whose region begins at line `start`, at nesting
        `depth`. Returns (prelude, lines, last content line).

        Comments are re-indented to where the key they belong to will stand once
        styled (depth * INDENT): ruamel keeps a full-line comment's column, so
        placing it right here keeps it right after the round trip."""
        pairs = node.value
        col = depth * INDENT
        key_lines = [k.start_mark.line for k, _ in pairs]
        ends = [max(k.start_mark.line, self.last_line(v)) for k, v in pairs]
        blocks: list[_Block] = []
        prelude: list[str] = []
        for i, (k, v) in enumerate(pairs):
            here = k.start_mark.column
            gap = self.lines[(start if i == 0 else ends[i - 1] + 1) : key_lines[i]]
            block = _Block(key=k.value if isinstance(k, ScalarNode) else None)
            if i == 0 and root:
                prelude = gap
                gap = []
            j = 0
            if i > 0:  # comments indented deeper than this key close the block above
                while j < len(gap) and _is_comment(gap[j]) and _indent_of(gap[j]) > here:
                    blocks[-1].trailing.append(" " * (col + INDENT) + gap[j].lstrip())
                    j += 1
            rest = gap[j:]
            while rest and not rest[0].strip():
                block.blank.append("")
                rest = rest[1:]
            block.comments = [(" " * col + ln.lstrip()) if _is_comment(ln) else ln for ln in rest]
            block.body = self.pair(k, v, key_lines[i], ends[i], path, depth)
            blocks.append(block)
        order = key_order(path)
        if order is not None:
            spots = [b.blank for b in blocks]
            blocks = sorted(blocks, key=lambda b: _rank(order, b.key))
            for b, blank in zip(blocks, spots):
                b.blank = blank
        out: list[str] = []
        for b in blocks:
            out += b.blank + b.comments + b.body + b.trailing
        return prelude, out, ends[-1] if ends else start - 1

    def pair(self, k: Node, v: Node, key_line: int, end: int, path: tuple[str, ...], depth: int) -> list[str]:
        if (
            isinstance(v, MappingNode)
            and not v.flow_style
            and v.value
            and v.start_mark.line > key_line
            and isinstance(k, ScalarNode)
        ):
            _, inner, _ = self.mapping(v, key_line + 1, path + (str(k.value),), root=False, depth=depth + 1)
            return [self.lines[key_line]] + inner
        return self.lines[key_line : end + 1]


def _aliased(node: Node, seen: set[int]) -> bool:
    """Whether the document reuses a node (anchors and aliases): moving lines
    around could put an alias before its anchor, so such files keep their order."""
    if id(node) in seen:
        return True
    seen.add(id(node))
    if isinstance(node, MappingNode):
        return any(_aliased(k, seen) or _aliased(v, seen) for k, v in node.value)
    if isinstance(node, SequenceNode):
        return any(_aliased(v, seen) for v in node.value)
    return False


def reorder(text: str) -> str:
    """Put every block mapping's keys in canonical order (pass 2)."""
    node = _yaml().compose(text)
    if not isinstance(node, MappingNode) or node.flow_style or not node.value or _aliased(node, set()):
        return text
    r = _Reorderer(text)
    prelude, body, last = r.mapping(node, 0, (), root=True, depth=0)
    tail = r.lines[last + 1 :]
    return "\n".join(prelude + body + tail)


# --------------------------------------------------------------------------- entry point


def _meaning(text: str) -> Any:
    y = YAML(typ="safe", pure=True)
    return y.load(text)


def _split_start(text: str) -> tuple[str, str]:
    """Split off what precedes an explicit `---` (comments, directives): ruamel
    drops comments placed before the document start, so they are kept aside."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        bare = line.strip()
        if not bare or bare.startswith(("#", "%")):
            continue
        if bare == "---" or bare.startswith("--- #"):
            return "".join(lines[: i + 1]), "".join(lines[i + 1 :])
        break
    return "", text


def _comments(text: str) -> list[str]:
    """Every '#...' tail of a line: what must survive formatting."""
    return [line[line.index("#") :].strip() for line in text.splitlines() if "#" in line]


def format_text(text: str) -> str:
    """The canonical form of a fleet.yaml's text; raises FleetError if it cannot
    be formatted without changing what it means or losing a comment."""
    original = _meaning(text)
    head, current = _split_start(text.replace("\r\n", "\n"))
    for _ in range(4):
        nxt = reorder(restyle(reorder(current)))
        if not nxt.endswith("\n"):
            nxt += "\n"
        while nxt.endswith("\n\n"):
            nxt = nxt[:-1]
        if nxt == current:
            break
        current = nxt
    result = head + current
    if _meaning(result) != original:
        raise FleetError("fleet fmt could not reformat this file without changing its meaning; it was left as is")
    missing = [c for c in _comments(text) if c not in result]
    if missing:
        raise FleetError(f"fleet fmt could not keep the comment {missing[0]!r} in place; the file was left as is")
    return result


def write(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions."""
    try:
        write_atomic(path, text, mode=path.stat().st_mode & 0o7777)
    except OSError as exc:
        raise FleetError(f"cannot write {path}: {exc.strerror}") from None
