"""The executor with a `runner=` callable: ordering, bounded parallelism,
failure containment and results, with no provider behind it."""

from __future__ import annotations

import threading

import pytest

from reconciler.core.errors import FleetError, ProviderError
from reconciler.engine.execute import Event, execute
from reconciler.core.plan import Action, Plan, RouteUpdate, parse_action
from tests.unit.builders import agent, desired

pytestmark = pytest.mark.timeout(30)

D = desired()


def act(aid: str, *deps: str, op: str = "create") -> Action:
    """An agent action of `op` (its records made up: the runner ignores them)."""
    if op == "route":
        return RouteUpdate(id=aid, cause="test", depends_on=deps)
    spec = agent(aid)
    seen = {"name": aid, "host": None, "provider": "docker", "id": "x" * 64, "state": "running", "spec_hash": ""}
    return parse_action(dict(id=aid, op=op, kind="agent", name=aid, cause="test", depends_on=deps,
                             desired_agent=spec, observed_agent=None if op == "create" else seen))  # type: ignore[return-value]


def plan(*actions: Action) -> Plan:
    return Plan(fleet="demo", actions=actions)


class Recorder:
    """A runner that records when each action starts and ends."""

    def __init__(self, fail: dict[str, BaseException] | None = None):
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.ended: list[str] = []
        self.fail = fail or {}

    def __call__(self, a: Action) -> None:
        with self.lock:
            self.started.append(a.id)
        try:
            if a.id in self.fail:
                raise self.fail[a.id]
        finally:
            with self.lock:
                self.ended.append(a.id)


class TimelineRecorder(Recorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeline: list[tuple[str, str]] = []

    def __call__(self, a: Action) -> None:
        with self.lock:
            self.timeline.append(("start", a.id))
        try:
            super().__call__(a)
        finally:
            with self.lock:
                self.timeline.append(("end", a.id))


def ends_before_start(rec: TimelineRecorder, aid: str) -> set[str]:
    i = rec.timeline.index(("start", aid))
    return {x for kind, x in rec.timeline[:i] if kind == "end"}


def test_dependencies_finish_before_dependents_start():
    # host -> two joins -> route; plus an unrelated chain
    p = plan(
        act("route", "join-a", "join-b", op="route"),
        act("join-b", "host"),
        act("join-a", "host"),
        act("host"),
        act("z2", "z1"),
        act("z1"),
    )
    rec = TimelineRecorder()
    result = execute(D, p, parallel=4, runner=rec)
    assert result.ok
    assert sorted(result.done) == sorted(a.id for a in p.actions)
    for a in p.actions:
        assert set(a.depends_on) <= ends_before_start(rec, a.id), a.id


@pytest.mark.parametrize("parallel", [1, 2, 8])
def test_order_holds_at_any_parallelism(parallel):
    p = plan(
        act("h"), act("a", "h"), act("b", "h"), act("c", "a", "b"), act("d"), act("e", "d", "c"),
    )
    rec = TimelineRecorder()
    result = execute(D, p, parallel=parallel, runner=rec)
    assert result.ok and len(result.done) == 6
    for a in p.actions:
        assert set(a.depends_on) <= ends_before_start(rec, a.id), a.id


def test_parallelism_reaches_and_never_exceeds_the_bound():
    parallel = 3
    barrier = threading.Barrier(parallel, timeout=10)
    lock = threading.Lock()
    now = peak = 0

    def runner(a: Action) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            barrier.wait()  # proves `parallel` actions run at once (or times out)
        finally:
            with lock:
                now -= 1

    p = plan(*(act(f"x{i}") for i in range(parallel * 4)))
    result = execute(D, p, parallel=parallel, runner=runner)
    assert result.ok, result.failed
    assert peak == parallel


def test_parallel_one_runs_one_at_a_time():
    lock = threading.Lock()
    now = peak = 0

    def runner(a: Action) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        threading.Event().wait(0.005)
        with lock:
            now -= 1

    result = execute(D, plan(*(act(f"x{i}") for i in range(6))), parallel=1, runner=runner)
    assert result.ok and peak == 1


def test_failure_skips_dependents_but_not_independent_work():
    p = plan(
        act("host"),
        act("join", "host"),
        act("message", "join", op="message"),
        act("other"),
        act("other-2", "other"),
    )
    rec = TimelineRecorder(fail={"host": RuntimeError("boom")})
    events: list[Event] = []
    result = execute(D, p, parallel=2, runner=rec, on_event=events.append)
    assert result.failed == {"host": "RuntimeError: boom"}
    assert result.skipped == {"join": "skipped: host failed", "message": "skipped: join failed"}
    assert sorted(result.done) == ["other", "other-2"]
    assert not result.ok
    assert "join" not in rec.started and "message" not in rec.started
    kinds = {(e.kind, e.action.id) for e in events}
    assert ("failed", "host") in kinds and ("skipped", "join") in kinds and ("done", "other-2") in kinds
    assert [e.error for e in events if e.kind == "failed"] == ["RuntimeError: boom"]


def test_error_messages_by_kind():
    p = plan(act("a"), act("b"), act("c"))
    fail = {"a": ProviderError("agent a", "no such image"), "b": FleetError("clear message"), "c": ValueError("x")}
    result = execute(D, p, runner=Recorder(fail=fail))
    assert result.failed == {"a": "no such image", "b": "clear message", "c": "ValueError: x"}
    assert result.done == []


def test_unknown_dependency_ids_do_not_hang():
    p = plan(act("a", "not-in-plan"), act("b", "a"))
    result = execute(D, p, runner=Recorder())
    assert result.done == ["a", "b"] and result.ok


def test_dependency_cycle_is_reported_not_hung():
    p = plan(act("a", "b"), act("b", "a"), act("c"))
    result = execute(D, p, runner=Recorder())
    assert result.done == ["c"]
    assert result.skipped == {"a": "skipped: unsatisfiable dependency", "b": "skipped: unsatisfiable dependency"}
    assert not result.ok


def test_events_and_notes():
    events: list[Event] = []

    def runner(a: Action) -> str | None:
        return "kept workspace" if a.id == "a" else None

    result = execute(D, plan(act("a"), act("b", "a")), runner=runner, on_event=events.append)
    assert result.notes == ["kept workspace"]
    assert [(e.kind, e.action.id) for e in events] == [("start", "a"), ("done", "a"), ("start", "b"), ("done", "b")]
    assert events[1].note == "kept workspace"


def test_after_hooks_run_on_success_and_their_failure_counts():
    seen: list[str] = []

    def hook(a: Action) -> None:
        seen.append(a.id)
        if a.id == "bad":
            raise FleetError("hook failed")

    p = plan(act("good"), act("bad"), act("after-bad", "bad"), act("r", op="restart"))
    result = execute(D, p, runner=Recorder(), after={"create": hook})
    assert sorted(seen) == ["bad", "good"]
    assert result.failed == {"bad": "hook failed"}
    assert result.skipped == {"after-bad": "skipped: bad failed"}
    assert sorted(result.done) == ["good", "r"]


def test_cancel_skips_what_has_not_started():
    cancel = threading.Event()

    def runner(a: Action) -> None:
        cancel.set()  # the first action asks to stop

    p = plan(act("a"), act("b", "a"), act("c", "b"))
    result = execute(D, p, parallel=1, runner=runner, cancel=cancel)
    assert result.done == ["a"]
    assert result.interrupted and not result.ok
    assert result.skipped == {"b": "skipped: interrupted", "c": "skipped: interrupted"}


def test_empty_plan_does_nothing():
    result = execute(D, plan(), runner=Recorder())
    assert result.ok and result.done == [] and result.failed == {}
