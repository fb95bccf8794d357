"""The plan under construction, and the small pure helpers reconcile's parts share.

`reconcile` (hosts and agents), `routes` (the route action) and `teardown`
(images, `fleet destroy`) each add their actions to one `Builder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Iterable, TypeVar

from reconciler.core.model import Desired, Observed, ObservedAgent, ObservedHost
from reconciler.core.plan import Action, Change

HOST_NOUN = {"docker": "holder container", "modal": "sandbox"}

A = TypeVar("A", bound=Action)  # any one of the action classes
R = TypeVar("R", ObservedHost, ObservedAgent)


@dataclass(frozen=True)
class Options:
    prune: bool = True  # destroy what fleet.yaml no longer names
    targets: frozenset[str] = frozenset()  # limit to these agents (and what they need)
    replace: frozenset[str] = frozenset()  # force-replace these agents


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"env": {"TZ": "UTC"}} -> {"env.TZ": "UTC"}; lists stay whole values."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data} if prefix else {}


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Change, ...]:
    """The dotted keys whose value differs, with their before and after."""
    b, a = flatten(before), flatten(after)
    out = []
    for key in sorted(set(b) | set(a)):
        if b.get(key) != a.get(key):
            out.append(Change(key=key, before=b.get(key), after=a.get(key)))
    return tuple(out)


def pick(candidates: list[R], want_hash: str) -> tuple[R, list[R]]:
    """Keep the best of several records for one name (a crash can leave
    duplicates, an upgrade an old-named one): today's name first, then the one
    with the wanted hash that runs, else the newest."""
    ranked = sorted(
        candidates,
        key=lambda r: (r.legacy_name is None, r.spec_hash == want_hash, r.state == "running", r.created or ""),
        reverse=True,
    )
    return ranked[0], ranked[1:]


def group(records: Iterable[R]) -> dict[str, list[R]]:
    out: dict[str, list[R]] = {}
    for r in records:
        out.setdefault(r.name, []).append(r)
    return out


@dataclass
class Builder:
    desired: Desired
    observed: Observed
    opts: Options
    actions: list[Action] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # shared host name -> the observed record kept for it (others are duplicates)
    kept_hosts: dict[str, ObservedHost] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # left stopped after `fleet stop`

    def add(self, action: A) -> A:
        self.actions.append(action)
        return action

    def in_scope(self, agent: str) -> bool:
        return not self.opts.targets or agent in self.opts.targets

    def holds_kept_agents(self, host: ObservedHost) -> bool:
        """With --no-prune, agents fleet.yaml no longer names are kept, and so is
        the host they are joined to."""
        return not self.opts.prune and any(
            a.host == host.name and a.name not in self.desired.agents and a.host_id in (None, host.id)
            for a in self.observed.agents
        )

    def host_in_scope(self, host: str) -> bool:
        if not self.opts.targets:
            return True
        return any(a.host == host for a in self.desired.agents.values() if a.name in self.opts.targets)
