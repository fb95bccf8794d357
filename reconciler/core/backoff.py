"""Per-resource retry scheduling for the watch loop (exponential backoff).

The watch loop re-plans on every trigger; without this, an action that keeps
failing (an image that cannot be pulled, a name someone else's container holds)
would be retried in a hot loop. This module only decides *when* an action the
plan already contains may run again, never *what* to do: reconcile decides
that. Holding an action back also holds back what depends on it in the plan
(an agent joining a host waits with its host), and nothing else.

A resource is an action id (`agent:web`, `host:auth-host`, `message:web`, a
destroy's id): the same id across passes means the same resource. Rules:

- a failure waits 1 s, then 2, 4, ... up to 60 s before the next attempt;
- an action that succeeded but is needed again within `settle` seconds (its
  container died straight away, say) runs again at once the first time, then
  waits 1 s, 2 s, ... like a failure, the way Kubernetes backs off a crash
  loop, so the watcher never spins;
- a change of the resource's spec in fleet.yaml starts it afresh at once;
- a resource that is no longer in the plan, and has been quiet for `settle`
  seconds, is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core.model import Desired, canonical_hash
from reconciler.core.plan import Action, Plan

BASE = 1.0
CAP = 60.0
SETTLE = 10.0


@dataclass
class Entry:
    token: str | None  # the resource's spec when it failed/succeeded
    attempts: int = 0  # failures (and too-quick repeats) in a row
    not_before: float = 0.0  # monotonic time before which it waits
    settle_until: float = 0.0  # a repeat before this counts as a failure
    error: str | None = None
    armed: bool = False  # a retry is due at not_before and no pass has run since


def token_of(action: Action, desired: Desired) -> str | None:
    """The part of fleet.yaml an action's resource comes from; when it changes,
    the resource's backoff starts afresh."""
    if action.op == "message":
        agent = desired.agents.get(action.name)
        return canonical_hash([agent.spec_hash, agent.message]) if agent else None
    if action.kind == "agent":
        agent = desired.agents.get(action.name)
        return agent.spec_hash if agent else None
    if action.kind == "host":
        host = desired.hosts.get(action.name)
        return host.spec_hash if host else None
    return None


def without(plan: Plan, held: set[str]) -> tuple[Plan, set[str]]:
    """The plan minus the `held` actions and everything depending on them,
    directly or not. Returns the smaller plan and the ids it left out."""
    out = {a.id for a in plan.actions if a.id in held}
    changed = True
    while changed:
        changed = False
        for a in plan.actions:
            if a.id not in out and any(dep in out for dep in a.depends_on):
                out.add(a.id)
                changed = True
    kept = tuple(a for a in plan.actions if a.id not in out)
    return plan.model_copy(update={"actions": kept}), out


class Backoff:
    """When each resource may be tried again. Time is passed in (monotonic
    seconds), so the rules are tested without sleeping."""

    def __init__(self, base: float = BASE, cap: float = CAP, settle: float = SETTLE):
        self.base, self.cap, self.settle = base, cap, settle
        self.entries: dict[str, Entry] = {}

    def delay(self, attempts: int) -> float:
        return min(self.cap, self.base * 2 ** max(0, attempts - 1))

    def failed(self, key: str, token: str | None, now: float, error: str) -> float:
        """Record a failure; returns the wait before the next attempt."""
        e = self.entries.get(key)
        if e is None or e.token != token:
            e = self.entries[key] = Entry(token)
        e.attempts += 1
        wait = self.delay(e.attempts)
        e.not_before = now + wait
        e.settle_until = 0.0
        e.error = error
        e.armed = True
        return wait

    def succeeded(self, key: str, token: str | None, now: float) -> None:
        e = self.entries.get(key)
        if e is None or e.token != token:
            e = self.entries[key] = Entry(token)
        e.settle_until = now + self.settle
        e.error = None

    def split(self, plan: Plan, desired: Desired, now: float) -> tuple[Plan, dict[str, float]]:
        """What may run now, and how long each held-back action still waits.

        Actions held back drag their dependents with them (those are left out
        of the runnable plan but are not in backoff themselves)."""
        held: dict[str, float] = {}
        in_plan = set()
        for a in plan.actions:
            in_plan.add(a.id)
            wait = self._wait(a.id, token_of(a, desired), now)
            if wait > 0:
                held[a.id] = wait
        for key in list(self.entries):
            e = self.entries[key]
            if now >= e.not_before:
                e.armed = False  # this pass was its retry
            if key not in in_plan and now >= e.not_before and now >= e.settle_until:
                del self.entries[key]
        if not held:
            return plan, {}
        runnable, _ = without(plan, set(held))
        return runnable, held

    def _wait(self, key: str, token: str | None, now: float) -> float:
        e = self.entries.get(key)
        if e is None:
            return 0.0
        if e.token != token:  # its spec changed: a fresh start
            del self.entries[key]
            return 0.0
        if now < e.settle_until:  # needed again right after it succeeded
            # the first quick repeat runs at once (someone removed a container by
            # hand); the next ones back off like failures (a crash loop)
            e.attempts += 1
            e.not_before = now + (self.delay(e.attempts - 1) if e.attempts > 1 else 0.0)
            e.settle_until = 0.0
            e.error = "needed again right after it succeeded"
            e.armed = e.attempts > 1
        return max(0.0, e.not_before - now)

    def next_due(self) -> float | None:
        """When the loop must run a pass for a held-back resource's retry (may be
        in the past: at once); None when no retry is pending."""
        due = [e.not_before for e in self.entries.values() if e.armed]
        return min(due) if due else None

    def clear(self) -> None:
        self.entries.clear()
