"""The pure parts of `fleet attach`: detach keys in Docker's notation, finding
them across reads, and what is said when an attach ends (no engine)."""

from __future__ import annotations

import pytest

from reconciler.cli.agents import attach_outcome
from reconciler.core.errors import FleetError
from reconciler.providers.terminal import AttachEnd, DetachScanner, parse_detach_keys


def test_detach_keys_in_dockers_notation():
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-x, q") == b"\x18q"
    assert parse_detach_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_") == bytes([0, 27, 28, 29, 30, 31])
    for bad in ("", "meta-x", "ctrl-", "ctrl-1", "ab", "ctrl-p,,ctrl-q"):
        with pytest.raises(FleetError, match="--detach-keys"):
            parse_detach_keys(bad)


def test_scanner_finds_the_sequence_across_reads_and_holds_a_possible_start():
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"abc\x10") == (b"abc", False)  # ctrl-p held back
    assert s.feed(b"x") == (b"\x10x", False)  # not a detach: passed on
    assert s.feed(b"\x10") == (b"", False)
    assert s.feed(b"\x11ignored") == (b"", True)
    assert DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)


def test_what_is_said_when_an_attach_ends():
    before = {"running": True, "restarts": 0, "started_at": "t1", "exit_code": 0}
    restarted = {"running": True, "restarts": 1, "started_at": "t2", "exit_code": 0}
    text, code = attach_outcome("a", AttachEnd(False, 130), before, restarted, "always")
    assert (text, code) == ("a exited (exit code 130) and was restarted (restart: always); it is running again", 130)
    stopped = {"running": False, "restarts": 0, "started_at": "t1", "exit_code": 3}
    text, code = attach_outcome("a", AttachEnd(False, None), before, stopped, "never")
    assert (text, code) == ("a exited (exit code 3); it is not running (restart: never)", 3)
    text, code = attach_outcome("a", AttachEnd(False, None), before, dict(before), "always")
    assert "still running" in text and code == 0 and "keeps running" not in text
    assert attach_outcome("a", AttachEnd(False, None), before, {}, "always") == ("a is gone (its container was removed)", 1)
