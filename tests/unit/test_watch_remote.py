"""The watch loop's bookkeeping of engines that do not answer (watch/remote.py):
said once per outage, by name, retried sooner than the resync, and said when back."""

from __future__ import annotations

from reconciler.core.plan import Plan
from reconciler.watch.remote import RETRY_CAP, RemoteEngines

E = "ssh://big-box"


def plan(unreachable: dict[str, str] | None = None, warnings: tuple[str, ...] = ()) -> Plan:
    return Plan(fleet="f", actions=(), unreachable=unreachable or {}, warnings=warnings)


def test_an_outage_is_said_once_by_name_then_its_end():
    r = RemoteEngines()
    assert r.seen(plan(), now=0.0) == [] and r.retry_at is None
    warning = f"engine {E} unreachable (ssh: connection refused): agent a unknown; nothing is created, replaced or removed there until it answers"
    lines = r.seen(plan({E: "ssh: connection refused"}, (warning,)), now=100.0)
    assert lines == [(f"{warning}; still watching, retrying until it answers", True)]
    assert r.retry_at == 101.0
    assert r.seen(plan({E: "ssh: connection refused"}, (warning,)), now=101.0) == []  # not repeated
    assert r.retry_at == 103.0  # 1, 2, 4, ... s
    back = r.seen(plan(), now=110.0)
    assert back == [(f"engine {E} answers again: converging what runs there", False)] and r.came_back(back)
    assert r.retry_at is None and r.attempts == 0


def test_retries_are_capped_and_each_engine_is_named():
    r = RemoteEngines()
    for i in range(10):
        lines = r.seen(plan({E: "down", "ssh://other": "down"}), now=float(i))
        if i == 0:
            assert [t for t, _ in lines] == [
                f"engine {E} unreachable (down); still watching, retrying until it answers",
                "engine ssh://other unreachable (down); still watching, retrying until it answers",
            ]
    assert r.retry_at == 9.0 + RETRY_CAP
    lines = r.seen(plan({"ssh://other": "down"}), now=20.0)
    assert lines == [(f"engine {E} answers again: converging what runs there", False)]
    assert r.retry_at is not None  # the other one is still away
