"""`fleet apply --watch` refuses what it cannot watch before touching anything
(no Docker needed)."""

from __future__ import annotations

from tests.conftest import run_fleet


def test_a_file_invalid_from_the_start_exits_1_with_its_problems(tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("fleet: Bad_Name\n")
    r = run_fleet("apply", "--watch", str(bad), timeout=60)
    assert r.code == 1, r.text
    assert "fleet.yaml:1:" in r.err and "Traceback" not in r.text, r.text


def test_watch_options_need_watch_and_dry_run_does_not_combine(tmp_path):
    good = tmp_path / "fleet.yaml"
    good.write_text("fleet: ok\n")
    r = run_fleet("apply", "--resync", "5", str(good), timeout=60)
    assert r.code == 1 and "only apply to --watch" in r.err, r.text
    r = run_fleet("apply", "--watch", "--dry-run", str(good), timeout=60)
    assert r.code == 1 and "fleet diff" in r.err, r.text
    r = run_fleet("apply", "--watch", "--resync", "0", str(good), timeout=60)
    assert r.code == 1 and "--resync" in r.err, r.text
