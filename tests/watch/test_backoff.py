"""The watch loop's retry scheduling, with hand-built plans and a fake clock
(pure: no engine, no sleeping)."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.backoff import Backoff, token_of, without
from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef
from reconciler.core.plan import Action, Plan, parse_action
from reconciler.watch.triggers import Trigger, Waker
from reconciler.watch.loop import why


def desired(tz: str = "UTC", message: str | None = None) -> Desired:
    img = ImageRef(ref="img:1")
    return Desired(
        fleet="f", file=Path("/x/fleet.yaml"),
        hosts={"h": DesiredHost(name="h", image=img)},
        agents={
            "web": DesiredAgent(name="web", image=img, env={"TZ": tz}, message=message),
            "api": DesiredAgent(name="api", image=img),
            "impl": DesiredAgent(name="impl", host="h", image=img),
        },
    )


def act(id: str, op: str = "create", kind: str = "agent", name: str | None = None, deps: tuple[str, ...] = ()) -> Action:
    """An action of `kind` and `op` for `name`, with made-up records (backoff reads ids, ops and names)."""
    name = name or id.split(":")[1]
    img = ImageRef(ref="img:1")
    seen = {"name": name, "host": None, "provider": "docker", "id": "x" * 64, "state": "running", "spec_hash": ""}
    data: dict = dict(id=id, op=op, kind=kind, name=name, cause="test", depends_on=deps)
    if kind == "agent":
        data["desired_agent"] = DesiredAgent(name=name, image=img)
        data["observed_agent"] = None if op in ("create", "join") else seen
    elif kind == "host":
        data["desired_host"] = None if op == "destroy" else DesiredHost(name=name, image=img)
        data["observed_host"] = None if op == "create" else {k: v for k, v in seen.items() if k != "host"}
    if op == "destroy":
        data["desired_agent"] = data["desired_host"] = None
    return parse_action(data)  # type: ignore[return-value]


def plan(*actions: Action) -> Plan:
    return Plan(fleet="f", actions=actions)


def ids(p: Plan) -> list[str]:
    return [a.id for a in p.actions]


def test_failures_double_from_1s_and_are_capped_at_60s():
    b, d = Backoff(), desired()
    a = act("agent:web")
    waits = [b.failed(a.id, token_of(a, d), now=0.0, error="boom") for _ in range(9)]
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_failed_resource_is_held_until_its_time_and_the_rest_runs():
    b, d = Backoff(), desired()
    web, api = act("agent:web"), act("agent:api")
    b.failed(web.id, token_of(web, d), now=100.0, error="boom")
    runnable, held = b.split(plan(web, api), d, now=100.5)
    assert ids(runnable) == ["agent:api"] and held == {"agent:web": 0.5}
    assert b.next_due() == 101.0
    runnable, held = b.split(plan(web, api), d, now=101.0)
    assert ids(runnable) == ["agent:web", "agent:api"] and held == {}
    assert b.next_due() is None  # that pass was its retry


def test_holding_an_action_holds_what_depends_on_it():
    host = act("host:h", kind="host")
    join = act("agent:impl", op="join", deps=("host:h",))
    msg = act("message:impl", op="message", name="impl", deps=("agent:impl",))
    other = act("agent:api")
    runnable, out = without(plan(host, join, msg, other), {"host:h"})
    assert ids(runnable) == ["agent:api"]
    assert out == {"host:h", "agent:impl", "message:impl"}


def test_a_spec_change_starts_the_backoff_afresh():
    b = Backoff()
    web = act("agent:web")
    old = desired("UTC")
    for _ in range(5):
        b.failed(web.id, token_of(web, old), now=0.0, error="boom")  # now waits 16 s
    new = desired("Europe/Paris")
    runnable, held = b.split(plan(web), new, now=1.0)
    assert ids(runnable) == ["agent:web"] and held == {}
    assert b.failed(web.id, token_of(web, new), now=1.0, error="boom") == 1


def test_a_message_change_is_a_new_spec_for_the_message_only():
    m = act("message:web", op="message", name="web")
    a = act("agent:web")
    assert token_of(m, desired(message="hi")) != token_of(m, desired(message="hello"))
    assert token_of(a, desired(message="hi")) == token_of(a, desired(message="hello"))


def test_a_quick_repeat_after_success_runs_once_then_backs_off():
    """A container someone removes right after it was created comes back at
    once; one that keeps needing the same action (a crash loop) backs off."""
    b, d = Backoff(settle=10.0), desired()
    web = act("agent:web")
    b.succeeded(web.id, token_of(web, d), now=0.0)
    runnable, held = b.split(plan(web), d, now=1.0)  # first repeat: at once
    assert ids(runnable) == ["agent:web"]
    b.succeeded(web.id, token_of(web, d), now=1.0)
    runnable, held = b.split(plan(web), d, now=2.0)  # second: waits 1 s
    assert ids(runnable) == [] and held == {"agent:web": 1.0}
    runnable, held = b.split(plan(web), d, now=3.0)
    assert ids(runnable) == ["agent:web"]
    b.succeeded(web.id, token_of(web, d), now=3.0)
    runnable, held = b.split(plan(web), d, now=3.5)  # third: waits 2 s
    assert held == {"agent:web": 2.0}


def test_quiet_resources_are_forgotten():
    b, d = Backoff(settle=10.0), desired()
    web = act("agent:web")
    b.failed(web.id, token_of(web, d), now=0.0, error="boom")
    b.split(plan(web), d, now=1.0)
    b.succeeded(web.id, token_of(web, d), now=1.0)
    b.split(plan(), d, now=5.0)
    assert "agent:web" in b.entries  # still settling
    b.split(plan(), d, now=11.5)
    assert b.entries == {}


def test_destroys_of_removed_resources_have_no_spec():
    d = desired()
    gone = act("agent:old:destroy:abc", op="destroy", name="old")
    assert token_of(gone, d) is None
    assert token_of(act("host:h", kind="host"), d) == d.hosts["h"].spec_hash


def test_the_waker_collects_pokes_and_times_out():
    w = Waker()
    try:
        assert w.wait(0.01) == []
        w.poke(Trigger("file", "fleet.yaml"))
        w.poke(Trigger("docker", "agent web exited 3"))
        got = w.wait(5.0)
        assert [t.source for t in got] == ["file", "docker"]
        assert w.wait(0.01) == []
    finally:
        w.close()


def test_why_names_what_woke_the_loop():
    assert why([Trigger("file", "fleet.yaml changed"), Trigger("docker", "agent web exited 3")]) == (
        "fleet.yaml changed, agent web exited 3"
    )
    assert why([]) == "resync"
    many = [Trigger("docker", f"agent a{i} exited 1") for i in range(5)]
    assert why(many).endswith("and 2 more")
