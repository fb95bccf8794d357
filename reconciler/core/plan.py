"""The plan: an ordered graph of actions, each with its resource and a human cause.

`reconcile` builds it, `execute` walks it, renderers show it. An action holds the
desired and/or observed record it needs, so execution makes no decision of its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from reconciler.core.model import DesiredAgent, DesiredHost, Frozen, ObservedAgent, ObservedHost

Op = Literal["create", "join", "restart", "replace", "start", "stop", "destroy", "route", "message"]
Kind = Literal["host", "agent", "route", "image"]

# Ops that change or remove something running: apply asks before these on a TTY.
DISRUPTIVE: frozenset[str] = frozenset({"replace", "destroy", "restart", "stop"})


class Change(Frozen):
    key: str  # dotted key path, e.g. "env.TZ"
    before: Any = None
    after: Any = None


class Action(Frozen):
    id: str
    op: Op
    kind: Kind
    name: str
    host: str | None = None
    provider: str = "docker"
    cause: str
    changes: tuple[Change, ...] = ()
    depends_on: tuple[str, ...] = ()
    desired_host: DesiredHost | None = None
    desired_agent: DesiredAgent | None = None
    observed_host: ObservedHost | None = None
    observed_agent: ObservedAgent | None = None
    route: dict[str, Any] | None = None  # route actions: the route entry

    @property
    def disruptive(self) -> bool:
        # removing an unused built image stops nothing
        return self.op in DISRUPTIVE and self.kind != "image"


class Plan(Frozen):
    fleet: str
    actions: tuple[Action, ...] = ()
    unchanged: tuple[str, ...] = ()  # "agent:web", "host:auth-host"
    # agents left stopped because a person ran `fleet stop` (and their spec has
    # not changed since): no action, but plans and status say so
    stopped: tuple[str, ...] = ()
    spec_hash: str = ""
    observed_fingerprint: str = ""
    warnings: tuple[str, ...] = ()  # from observation: shown with the plan, never acted on

    @property
    def empty(self) -> bool:
        return not self.actions

    def counts(self) -> Counter[str]:
        return Counter(a.op for a in self.actions)

    def summary(self) -> str:
        if self.empty:
            return f"fleet {self.fleet} is up to date"
        c = self.counts()
        order = ["create", "join", "replace", "restart", "start", "stop", "destroy", "route", "message"]
        parts = [f"{c[op]} to {op}" for op in order if c.get(op) and op != "message"]
        if c.get("message"):
            parts.append(f"{c['message']} first message{'s' if c['message'] != 1 else ''} to send")
        resources = [u for u in self.unchanged if not u.startswith("route:")]
        if resources:
            parts.append(f"{len(resources)} unchanged")
        return f"Plan for {self.fleet}: " + ", ".join(parts)

    def get(self, action_id: str) -> Action:
        for a in self.actions:
            if a.id == action_id:
                return a
        raise KeyError(action_id)

    @property
    def disruptive(self) -> bool:
        return any(a.disruptive for a in self.actions)


__all__ = ["Action", "Change", "Plan", "Op", "Kind", "DISRUPTIVE", "Field"]
