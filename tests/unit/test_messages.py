"""First messages as text: a folded YAML scalar loads without ruamel's fold
markers (BEL), and `typed()` turns text into the keystrokes sent."""

from __future__ import annotations

import textwrap
from pathlib import Path

from reconciler.load.loader import load
from reconciler.state.messages import typed

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_shared_host_example_has_plain_messages():
    desired = load(ROOT / "examples" / "shared-host-modal" / "fleet.yaml")
    for agent in desired.agents.values():
        assert agent.message and "\x07" not in agent.message and "\n" not in agent.message
    assert desired.agents["impl-agent"].message.startswith("Implement JWT authentication for this FastAPI app. Start")


def test_folded_literal_and_quoted_bel(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent("""
        fleet: demo
        defaults: {image: busybox}
        agents:
          a:
            message: >-
              one two
              three

              four
          b:
            message: |
              one
              two
          c:
            message: "keeps an explicit \\a bell"
        """))
    d = load(path)
    assert d.agents["a"].message == "one two three\nfour"
    assert d.agents["b"].message == "one\ntwo\n"
    assert d.agents["c"].message == "keeps an explicit \x07 bell"


def test_typed_is_the_text_then_enter():
    assert typed("one two") == b"one two\r"
    assert typed("one\ntwo\n") == b"one\ntwo\r"
    assert typed("one\r\ntwo") == b"one\ntwo\r"
    assert typed("ünï") == "ünï".encode() + b"\r"
