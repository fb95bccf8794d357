"""Resolving an agent name for logs/exec/attach/message: pure, no engine."""

from __future__ import annotations

import time

import pytest

from reconciler.engine import operate
from reconciler.core.errors import FleetError
from tests.unit.builders import agent, desired, observed, seen


def test_a_running_agent_resolves_to_its_record():
    d = desired(agent("web"), agent("worker"))
    o = observed(seen(d.agents["web"]), seen(d.agents["worker"]))
    t = operate.resolve(d, o, "web")
    assert t.agent.name == "web" and t.desired_agent == d.agents["web"]


def test_an_unknown_agent_lists_the_known_ones_with_a_hint():
    d = desired(agent("web"), agent("worker"))
    o = observed(seen(d.agents["web"]))
    with pytest.raises(FleetError) as err:
        operate.resolve(d, o, "wrker")
    assert str(err.value) == "no agent 'wrker' in fleet demo (agents: web, worker); did you mean 'worker'?"


def test_a_declared_agent_without_a_container_says_to_apply():
    d = desired(agent("web"))
    with pytest.raises(FleetError, match=r"agent 'web' has no container yet; run `fleet apply` first"):
        operate.resolve(d, observed(), "web")


def test_a_disabled_agent_says_so():
    d = desired(agent("web", enabled=False))
    with pytest.raises(FleetError, match=r"agent 'web' is disabled \(enabled: false"):
        operate.resolve(d, observed(), "web")


def test_an_agent_no_longer_in_the_file_can_still_be_reached():
    """Its container exists until the next apply; logs of it are still useful."""
    d = desired(agent("web"))
    gone = seen(agent("old"))
    assert operate.resolve(d, observed(seen(d.agents["web"]), gone), "old").agent.id == gone.id


def test_of_duplicates_the_running_one_is_chosen():
    d = desired(agent("web"))
    dead = seen(d.agents["web"], state="exited", id="a" * 64)
    live = seen(d.agents["web"], state="running", id="b" * 64)
    assert operate.resolve(d, observed(dead, live), "web").agent.id == "b" * 64


def test_resolve_many_defaults_to_every_present_agent():
    d = desired(agent("a"), agent("b"), agent("c"))
    o = observed(seen(d.agents["a"]), seen(d.agents["c"]))
    assert [t.agent.name for t in operate.resolve_many(d, o, [], all_agents=False)] == ["a", "c"]
    with pytest.raises(FleetError, match="has no agents running"):
        operate.resolve_many(d, observed(), [], all_agents=True)


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400)])
def test_since_durations(text, seconds):
    now = time.time()
    assert operate.parse_since(text, now=now) == now - seconds


def test_since_iso_and_bad_values():
    assert operate.parse_since("2026-01-01T00:00:00Z") == 1767225600.0
    assert operate.parse_since(None) is None
    with pytest.raises(FleetError, match=r"--since: expected a duration like 10m"):
        operate.parse_since("yesterday")


def test_exec_env_pairs():
    assert operate.parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(FleetError, match=r"-e: expected KEY=VALUE \(found 'NOPE'\)"):
        operate.parse_env(["NOPE"])


def test_an_unexpected_error_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    """The CLI's last resort: whatever escapes is one line naming it, exit 1;
    FLEET_DEBUG=1 lets the traceback through for whoever fixes it."""
    from typer.testing import CliRunner

    import reconciler.cli  # noqa: F401  (registers the commands)
    from reconciler.engine import observe
    from reconciler.cli.app import app

    (tmp_path / "fleet.yaml").write_text("fleet: boom\nagents: {a: {image: x}}\n")

    def explode(*a, **k):
        raise RuntimeError("engine said something odd\nsecond line")

    monkeypatch.setattr(observe, "observe", explode)  # the observe stage, as `fleet status` calls it
    monkeypatch.delenv("FLEET_DEBUG", raising=False)
    r = CliRunner().invoke(app, ["status", str(tmp_path / "fleet.yaml")])
    assert r.exit_code == 1
    assert "fleet: unexpected error: RuntimeError: engine said something odd (this is a bug" in r.output
    assert "Traceback" not in r.output and "second line" not in r.output
    monkeypatch.setenv("FLEET_DEBUG", "1")
    r = CliRunner().invoke(app, ["status", str(tmp_path / "fleet.yaml")])
    assert isinstance(r.exception, RuntimeError)
