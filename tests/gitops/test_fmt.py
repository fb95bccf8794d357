"""`fleet fmt`: canonical order and style, every comment kept with its key,
idempotent, meaning unchanged; `--check` exit codes; invalid files refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.gitops.fmt import format_text
from reconciler.load.loader import load
from tests.conftest import ROOT, run_fleet

MESSY = textwrap.dedent(
    """\
    # yaml-language-server: $schema=./schema.json
    # The team's fleet.

    agents:   # every agent
        # web serves the app
        web:
            ports: {web: 3000}   # published on 127.0.0.1
            command: "python3 -m http.server 3000"
            env:
                ZED: "last"
                ALPHA: "first"
            message: |
              # Heading inside a block scalar, not a comment

              Build the page.
            # web's closing note
        # the worker runs jobs
        worker:
            restart: on-failure
            host: pool
            command: [sleep, infinity]
    hosts:
        pool:
            workspace: {mode: shared, path: .}
    fleet: messy   # the fleet's name
    defaults:
        env: {TZ: UTC}
        image: fleet-base:bookworm
    # the end
    """
)


def fmt_file(tmp_path: Path, text: str = MESSY) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_canonical_order_comments_kept_and_idempotent(tmp_path):
    out = format_text(MESSY)
    assert out == format_text(out), "fmt is not idempotent"
    lines = out.splitlines()
    # top level: fleet, defaults, hosts, agents; the header stays on top, the tail at the end
    tops = [ln.split(":")[0] for ln in lines if ln and not ln.startswith((" ", "#"))]
    assert tops == ["fleet", "defaults", "hosts", "agents"]
    assert lines[0].startswith("# yaml-language-server:") and lines[1] == "# The team's fleet."
    assert lines[-1] == "# the end"
    # every comment survives, exactly once
    for comment in ("# every agent", "# web serves the app", "# published on 127.0.0.1", "# web's closing note",
                    "# the worker runs jobs", "# the fleet's name"):
        assert sum(comment in ln for ln in lines) == 1, comment
    # a comment above a key moves with that key, at its indentation
    assert lines[lines.index("  worker:") - 1] == "  # the worker runs jobs"
    assert lines[lines.index("  web:") - 1] == "  # web serves the app"
    assert "fleet: messy   # the fleet's name" in lines
    # agent fields in the model's order; env keys keep the user's order
    web = lines[lines.index("  web:") + 1 : lines.index("  # the worker runs jobs")]
    keys = [ln.strip().split(":")[0] for ln in web if ln.startswith("    ") and not ln.startswith("     ")]
    assert keys == ["command", "message", "env", "ports", "# web's closing note"]
    assert out.index('ZED: "last"') < out.index('ALPHA: "first"')
    worker = lines[lines.index("  worker:") + 1 :]
    assert [ln.strip().split(":")[0] for ln in worker[:3]] == ["host", "command", "restart"]
    # flow mappings are ordered too; block scalars are untouched
    assert "workspace: {path: ., mode: shared}" in out
    assert "# Heading inside a block scalar, not a comment\n" in out
    # defaults: image before env; 2-space indentation
    assert "defaults:\n  image: fleet-base:bookworm\n  env: {TZ: UTC}\n" in out


def test_fmt_changes_no_meaning(tmp_path):
    path = fmt_file(tmp_path)
    before = load(path)
    r = run_fleet("fmt", str(path))
    assert r.code == 0, r.text
    assert "reformatted" in r.out
    after = load(path)
    assert after.spec_hash == before.spec_hash
    assert after.model_dump(exclude={"file"}) == before.model_dump(exclude={"file"})


def test_check_exit_codes_and_file_untouched(tmp_path):
    path = fmt_file(tmp_path)
    r = run_fleet("fmt", "--check", str(path))
    assert r.code == 1, r.text
    assert "would reformat" in r.out and "fleet.yaml" in r.out
    assert path.read_text() == MESSY
    r = run_fleet("fmt", "--check", "--diff", str(path))
    assert r.code == 1 and r.out.count("\n+") and "-agents:" in r.out
    assert run_fleet("fmt", str(path)).code == 0
    formatted = path.read_text()
    r = run_fleet("fmt", "--check", str(path))
    assert r.code == 0, r.text
    r = run_fleet("fmt", str(path))
    assert r.code == 0 and "unchanged" in r.out
    assert path.read_text() == formatted


def test_invalid_file_is_refused_and_left_alone(tmp_path):
    text = MESSY.replace("fleet: messy", "fleet: Messy_Name").replace("restart: on-failure", "restart: sometimes")
    path = fmt_file(tmp_path, text)
    for args in (("fmt", str(path)), ("fmt", "--check", str(path))):
        r = run_fleet(*args)
        assert r.code == 1, r.text
        assert "fleet.yaml:" in r.err and "restart" in r.err and "fix these problems first" in r.err
        assert "Traceback" not in r.text
    assert path.read_text() == text


def test_already_canonical_files_are_left_as_they_are():
    path = ROOT / "examples" / "gitops" / "fleet.yaml"
    text = path.read_text()
    assert format_text(text) == text
    r = run_fleet("fmt", "--check", str(path))
    assert r.code == 0, r.text


@pytest.mark.parametrize(
    "text",
    [
        # anchors and aliases: order kept (an alias may not move above its anchor)
        "agents:\n  a: &base\n    image: x\n    command: [a]\n  b:\n    <<: *base\n    env: {A: '1'}\nfleet: x\n",
        # a file that is already one line per key
        "fleet: x\nagents: {}\n",
        # indentation four, sequences unindented
        "fleet: x\nagents:\n    a:\n        image: x\n        grants:\n        - github\n        - npm\n",
    ],
)
def test_odd_but_valid_files_keep_their_meaning(text):
    from ruamel.yaml import YAML

    out = format_text(text)
    assert format_text(out) == out
    safe = YAML(typ="safe", pure=True)
    assert safe.load(out) == safe.load(text)


def test_comments_before_the_document_start_are_kept():
    text = "# about this file\n---\n# the name\nagents: {}\nfleet: x  # eol\n"
    out = format_text(text)
    assert out == "# about this file\n---\n# the name\nfleet: x  # eol\nagents: {}\n"


def test_a_comment_fmt_cannot_place_is_an_error_not_a_loss(tmp_path):
    text = 'fleet: x\nagents:\n  a:\n    image: x\n    env: {\n      A: "1",  # inside a flow mapping\n    }\n'
    path = fmt_file(tmp_path, text)
    r = run_fleet("fmt", str(path))
    assert r.code == 1, r.text
    assert "could not keep the comment '# inside a flow mapping'" in r.err and "Traceback" not in r.text
    assert path.read_text() == text
