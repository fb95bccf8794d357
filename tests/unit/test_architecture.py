"""The architecture, enforced: every module of `reconciler/` is read with `ast`
(imports at module level, inside functions, under TYPE_CHECKING, and
`importlib.import_module("reconciler....")` strings alike) and checked against
the rules the README's "How it works" describes:

- layers, low to high: core < state < load < net < grants < routing < providers
  < engine < view < gitops < watch < cli; a module imports only its own layer or
  lower ones (`reconciler/__init__.py` and `__main__.py` are the top);
- `core` imports the standard library and pydantic, nothing else;
- provider drivers (`reconciler.providers.docker.*`, `reconciler.providers.modal.*`)
  are imported only by `providers` and `engine`, and only they call
  `get_provider`: the layers above the engine (view, gitops, watch, cli) may use
  the provider *types* (`providers.base`: `Provider`, results) and the local
  terminal bridge (`providers.terminal`), never drive a provider themselves;
- no import cycle between files, none between packages;
- imports inside `reconciler/` are absolute;
- no module over 500 lines;
- `mypy reconciler` is clean (configuration in pyproject.toml).

The tree does not satisfy all of this yet: `KNOWN` lists today's violations. A
test fails on any violation not in `KNOWN` (fix the code) and on any `KNOWN`
entry that no longer occurs (delete the entry), so the list only shrinks.
`python -m tests.unit.test_architecture` prints the current violations in
`KNOWN`'s format. The scanner is tests/unit/archscan.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.archscan import MAX_LINES, PACKAGE, differences, mypy_violations, violations

# Today's violations. Fix the code and delete the entry; never add one without the lead.
KNOWN: set[str] = set()


# --------------------------------------------------------------------------- the tests


def compare(found: dict[str, str], prefixes: tuple[str, ...]) -> None:
    report = differences(found, KNOWN, prefixes)
    if report:
        pytest.fail("architecture rules (tests/unit/test_architecture.py):\n" + "\n".join(report), pytrace=False)


@pytest.fixture(scope="module")
def found() -> dict[str, str]:
    return violations(PACKAGE)


def test_layers_only_import_downwards(found):
    compare(found, ("layer:", "relative:"))


def test_core_imports_only_the_standard_library_and_pydantic(found):
    compare(found, ("core:",))


def test_only_the_engine_drives_providers(found):
    compare(found, ("driver:",))


def test_no_import_cycles_between_files_or_packages(found):
    compare(found, ("cycle:", "package cycle:"))


def test_no_module_over_500_lines(found):
    compare(found, ("size:",))


def test_mypy_is_clean():
    compare(mypy_violations(), ("mypy:",))


def test_known_entries_are_well_formed():
    kinds = ("layer:", "relative:", "core:", "driver:", "cycle:", "package cycle:", "size:", "mypy:")
    assert [k for k in KNOWN if not k.startswith(kinds)] == []


# --------------------------------------------------------------------------- the scanner itself


def test_known_only_shrinks():
    found = {
        "size: m 510": "m has 510 lines", "layer: a imports b": "a.py:3: ...", "size: n 700": "n has 700 lines",
        "cycle: p -> q": "p and q", "cycle: s -> t": "s and t",
    }
    known = {"size: m 520", "layer: a imports b", "cycle: x -> y", "size: n 650", "cycle: p -> q -> r"}
    report = "\n".join(differences(found, known, ("size:", "layer:", "cycle:")))
    assert "better than KNOWN: replace 'size: m 520'\n      with 'size: m 510'" in report
    assert "worse than KNOWN ('size: n 650'): size: n 700" in report
    assert "better than KNOWN: replace 'cycle: p -> q -> r'\n      with 'cycle: p -> q'" in report
    assert "  + cycle: s -> t\n      s and t" in report
    assert "'cycle: x -> y' no longer occurs: delete it" in report
    assert "layer: a imports b" not in report
    assert differences(found, set(found), ("size:", "layer:", "cycle:")) == []
    assert differences(found, set(), ("core:",)) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return pkg


def test_scanner_finds_a_cycle_through_a_function_level_import_and_the_layer_breach(tmp_path):
    pkg = _package(tmp_path, {
        "core/model.py": "def f():\n    from pkg.engine.run import go\n    return go\n",
        "engine/run.py": "from pkg.core import model\n\ndef go():\n    return model\n",
    })
    found = violations(pkg)
    assert "cycle: pkg.core.model -> pkg.engine.run" in found
    assert "pkg/core/model.py:2 (inside a function): pkg.core.model -> pkg.engine.run" in found["cycle: pkg.core.model -> pkg.engine.run"]
    assert "layer: pkg.core.model imports pkg.engine.run" in found
    assert "package cycle: pkg.core <-> pkg.engine" in found
    assert not any(k.startswith("layer: pkg.engine") for k in found)  # downwards is fine


def test_scanner_sees_type_checking_import_module_relative_third_party_and_drivers(tmp_path):
    pkg = _package(tmp_path, {
        "core/a.py": "import yaml\nimport json\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.state import s\n",
        "state/s.py": "import importlib\nm = importlib.import_module('pkg.load.l')\n",
        "load/l.py": "from . import helper\n",
        "load/helper.py": "",
        "providers/docker/driver.py": "",
        "providers/base.py": "def get_provider(name):\n    return name\n",
        "cli/c.py": "from pkg.providers.docker import driver\nfrom pkg.providers.base import get_provider\n",
        "engine/e.py": "from pkg.providers.docker import driver\nfrom pkg.providers.base import get_provider\n",
        "view/big.py": "x = 1\n" * (MAX_LINES + 1),
    })
    found = violations(pkg)
    assert "core: pkg.core.a imports yaml" in found and not any("imports json" in k for k in found)
    assert "layer: pkg.core.a imports pkg.state.s" in found
    assert "under TYPE_CHECKING" in found["layer: pkg.core.a imports pkg.state.s"]
    assert "layer: pkg.state.s imports pkg.load.l" in found
    assert "relative: pkg.load.l" in found
    assert "driver: pkg.cli.c imports pkg.providers.docker.driver" in found
    assert "driver: pkg.cli.c uses get_provider" in found
    assert not any(k.startswith("driver: pkg.engine") for k in found)
    assert f"size: pkg.view.big {MAX_LINES + 1}" in found
    assert not any(k.startswith(("cycle:", "package cycle:")) for k in found)


if __name__ == "__main__":
    current = {**violations(PACKAGE), **mypy_violations()}
    print("KNOWN: set[str] = {")
    for key in sorted(current):
        print(f"    {key!r},")
    print("}")
