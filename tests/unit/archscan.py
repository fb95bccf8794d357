"""The import scanner behind tests/unit/test_architecture.py (the rules are
listed there and in the README's "How it works").

Reads every module of a package with `ast`: imports at module level, inside
functions, under TYPE_CHECKING, and `importlib.import_module("pkg....")` strings
alike, and returns each broken rule as a key (the format of the test's `KNOWN`)
with a line saying exactly what to fix. Importing an ancestor package
(`from reconciler import __version__`) is not an edge: Python has run that
`__init__` before the importing module. Providers are found by name in
`providers.base._FACTORIES` at run time; those strings are not imports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"
LAYERS = ("core", "state", "load", "net", "grants", "routing", "providers", "engine", "view", "gitops", "watch", "cli")
TOP = len(LAYERS)  # rank of reconciler/__init__.py and reconciler/__main__.py
MAX_LINES = 500
CORE_THIRD_PARTY = {"pydantic", "pydantic_core"}
DRIVERS = ("providers.docker", "providers.modal")  # under the package: only providers and engine import these
DRIVE_NAMES = {"get_provider", "reset_providers"}  # calling these drives a provider: providers and engine only


# --------------------------------------------------------------------------- the scanner


@dataclass(frozen=True)
class Import:
    target: str  # absolute dotted name: "reconciler.load.loader", "yaml"
    names: tuple[str, ...]  # for `from X import a, b`; () for `import X`
    line: int
    where: str  # "module level", "inside a function", "under TYPE_CHECKING", "import_module string"
    relative: bool = False


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    is_package: bool
    imports: list[Import] = field(default_factory=list)
    drives: list[int] = field(default_factory=list)  # lines that name get_provider/reset_providers


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: Module, base: str) -> None:
        self.module, self.base = module, base
        self.context: list[str] = []

    def _where(self) -> str:
        if "TYPE_CHECKING" in self.context:
            return "under TYPE_CHECKING"
        return "inside a function" if self.context else "module level"

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.context.append("function")
        self.generic_visit(node)
        self.context.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.context.append("TYPE_CHECKING")
        for child in node.body:
            self.visit(child)
        self.context.pop()
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.module.imports.append(Import(alias.name, (), node.lineno, self._where()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        names = tuple(a.name for a in node.names)
        if node.level:
            base = self.base
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
            self.module.imports.append(Import(target, names, node.lineno, self._where(), relative=True))
        else:
            self.module.imports.append(Import(node.module or "", names, node.lineno, self._where()))
        if names and DRIVE_NAMES & set(names):
            self.module.drives.append(node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and not arg.value.startswith("."):
                self.module.imports.append(Import(arg.value, (), node.lineno, "import_module string"))
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DRIVE_NAMES:
            self.module.drives.append(node.lineno)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in DRIVE_NAMES:
            self.module.drives.append(node.lineno)
        self.generic_visit(node)


def scan(package: Path) -> dict[str, Module]:
    """Every module of `package` (a directory), by dotted name, with its imports."""
    modules: dict[str, Module] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        name = ".".join(parts)
        text = path.read_text(encoding="utf-8")
        module = Module(name, path, len(text.splitlines()), rel.name == "__init__")
        base = name if module.is_package else name.rpartition(".")[0]
        _Collector(module, base).visit(ast.parse(text, filename=str(path)))
        modules[name] = module
    return modules


def edges(modules: dict[str, Module], root: str) -> dict[str, dict[str, Import]]:
    """module -> {module of the package it imports: the first such import}."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    out: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for name, module in modules.items():
        for imp in module.imports:
            if imp.target != root and not imp.target.startswith(root + "."):
                continue
            targets = [f"{imp.target}.{n}" for n in imp.names if f"{imp.target}.{n}" in modules]
            targets.append(imp.target)
            for target in targets:
                dest = resolve(target)
                ancestor = dest is not None and modules[dest].is_package and name.startswith(dest + ".")
                if dest and dest != name and not ancestor:
                    out[name].setdefault(dest, imp)
    return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the sets of nodes that reach each other (size > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(name: str) -> str:
    parts = name.split(".")
    return "top" if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def rank(name: str) -> int:
    layer = layer_of(name)
    return TOP if layer == "top" else LAYERS.index(layer) if layer in LAYERS else -1


def package_of(module: Module) -> str:
    return module.name if module.is_package else module.name.rpartition(".")[0]


def violations(package: Path) -> dict[str, str]:
    """Every broken rule except mypy: KNOWN-style key -> what exactly to fix."""
    modules = scan(package)
    root = package.name
    graph = edges(modules, root)
    out: dict[str, str] = {}

    def at(module: Module, imp: Import) -> str:
        return f"{module.path.relative_to(package.parent)}:{imp.line} ({imp.where})"

    for name, module in modules.items():
        mine = layer_of(name)
        if mine != "top" and mine not in LAYERS:
            out[f"layer: {name} is in no layer"] = (
                f"{module.path}: the folder `{mine}` is not a layer; move the module into one, or add the layer "
                f"to LAYERS in tests/unit/test_architecture.py and to the README's \"How it works\""
            )
            continue
        for imp in module.imports:
            if imp.relative:
                out[f"relative: {name}"] = f"{at(module, imp)}: write the import absolute (`from {imp.target} import ...`)"
            top_name = imp.target.split(".")[0]
            if mine == "core" and top_name != root and top_name not in sys.stdlib_module_names | CORE_THIRD_PARTY:
                out[f"core: {name} imports {top_name}"] = (
                    f"{at(module, imp)}: core is pure and imports only the standard library and pydantic; "
                    f"move the code that needs `{top_name}` to the layer that uses it"
                )
        for dest, imp in graph[name].items():
            # `from P import m` imports P (its __init__) and P.m: report P.m only
            if any(other.startswith(dest + ".") and i is imp for other, i in graph[name].items()):
                continue
            if rank(dest) > rank(name):
                out[f"layer: {name} imports {dest}"] = (
                    f"{at(module, imp)}: `{mine}` may import only its own layer or lower, and `{dest}` is in "
                    f"`{layer_of(dest)}`; move what it needs down into `{mine}` or lower, or have the caller "
                    f"pass it in"
                )
            driver = any(dest == f"{root}.{d}" or dest.startswith(f"{root}.{d}.") for d in DRIVERS)
            if driver and rank(name) > LAYERS.index("engine"):
                out[f"driver: {name} imports {dest}"] = (
                    f"{at(module, imp)}: only providers and engine import a provider driver; go through "
                    f"`{root}.engine` (add a function there)"
                )
        if module.drives and rank(name) > LAYERS.index("engine"):
            out[f"driver: {name} uses get_provider"] = (
                f"{module.path.relative_to(package.parent)}:{module.drives[0]}: only engine drives providers; "
                f"call a function of `{root}.engine` that does it"
            )
        if module.lines > MAX_LINES:
            out[f"size: {name} {module.lines}"] = (
                f"{module.path.relative_to(package.parent)} has {module.lines} lines (limit {MAX_LINES}): split it "
                f"by subject into modules under {MAX_LINES} lines"
            )
    file_graph = {m: set(d) for m, d in graph.items()}
    for component in strongly_connected(file_graph):
        links = [
            f"{at(modules[a], graph[a][b])}: {a} -> {b}" for a in component for b in sorted(graph[a]) if b in component
        ]
        out["cycle: " + " -> ".join(component)] = (
            "these files import each other (a function-level import is still a cycle); move the shared part "
            "into the lower module or pass it in. Imports in the cycle:\n        " + "\n        ".join(links)
        )
    pkg_graph: dict[str, set[str]] = {}
    pkg_links: dict[tuple[str, str], str] = {}
    for a, dests in graph.items():
        for b, imp in dests.items():
            pa, pb = package_of(modules[a]), package_of(modules[b])
            if pa != pb and root not in (pa, pb):
                pkg_graph.setdefault(pa, set()).add(pb)
                pkg_links.setdefault((pa, pb), f"{at(modules[a], imp)}: {a} -> {b}")
    for component in strongly_connected(pkg_graph):
        pairs = [(a, b) for a in component for b in sorted(pkg_graph.get(a, ())) if b in component]
        upward = [(a, b) for a, b in pairs if rank(a) < rank(b)]
        what = "the imports from a lower layer up" if upward else "one import per package pair"
        out["package cycle: " + " <-> ".join(component)] = (
            f"these packages import each other; remove {what} (the `layer:` entries say how):\n        "
            + "\n        ".join(pkg_links[pair] for pair in (upward or pairs))
        )
    return out


def mypy_violations(root: Path = ROOT) -> dict[str, str]:
    """`mypy reconciler` (pyproject's configuration), as one entry per file with errors."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "reconciler"], cwd=root, capture_output=True, text=True, timeout=600
    )
    errors: dict[str, list[str]] = {}
    for line in run.stdout.splitlines():
        m = re.match(r"^(reconciler/\S+\.py):\d+: error: ", line)
        if m:
            errors.setdefault(m.group(1), []).append(line)
    if run.returncode not in (0, 1) or (run.returncode == 1 and not errors):
        return {"mypy: did not run": f"exit {run.returncode}: {(run.stderr or run.stdout).strip()[-2000:]}"}
    return {
        f"mypy: {path} {len(lines)} error{'s' if len(lines) != 1 else ''}": f"`mypy {path}` reports:\n        " + "\n        ".join(lines)
        for path, lines in sorted(errors.items())
    }


# --------------------------------------------------------------------------- KNOWN


def _members(key: str) -> tuple[str, frozenset[str]] | None:
    """("cycle", {files}) or ("package cycle", {packages}) of a cycle key."""
    kind, _, rest = key.partition(": ")
    if kind not in ("cycle", "package cycle"):
        return None
    return kind, frozenset(rest.replace(" <-> ", " -> ").split(" -> "))


def differences(found: dict[str, str], known: set[str], prefixes: tuple[str, ...]) -> list[str]:
    """Violations not in `known` and `known` entries that no longer occur, for the
    keys that start with one of `prefixes`, each as a line saying what to do. A
    figure that went down, or a cycle that lost members, asks for the KNOWN entry
    to be replaced; one that went up, or a new cycle, is a violation."""
    known = {k for k in known if k.startswith(prefixes)}
    found = {k: v for k, v in found.items() if k.startswith(prefixes)}
    new = sorted(set(found) - known)
    gone = sorted(known - set(found))
    counted = re.compile(r"^((?:size|mypy): \S+) (\d+)")  # a figure: "size: m 624", "mypy: f.py 3 errors"
    report = []
    for key in new:
        m = counted.match(key)
        before = next((g for g in gone if m and g.startswith(m.group(1) + " ")), None)
        cycle = _members(key)
        if before is None and cycle is not None:
            before = next((g for g in gone if (c := _members(g)) and c[0] == cycle[0] and cycle[1] < c[1]), None)
        if before is None:
            report.append(f"  + {key}\n      {found[key]}")
            continue
        gone.remove(before)
        was = counted.match(before)
        if cycle is not None or (m and was and int(m.group(2)) < int(was.group(2))):
            report.append(f"  ~ better than KNOWN: replace {before!r}\n      with {key!r}")
        else:
            report.append(f"  + worse than KNOWN ({before!r}): {key}\n      {found[key]}")
    for key in gone:
        report.append(f"  - {key!r} no longer occurs: delete it from KNOWN in tests/unit/test_architecture.py")
    return report
