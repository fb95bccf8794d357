"""The plan: an ordered graph of actions, each with its resource and a human cause.

`reconcile` builds it, `execute` walks it, renderers show it. An action holds the
desired and/or observed record it needs, so execution makes no decision of its own
(the action classes are in actions.py).

`FORMAT_VERSION` is the version of the plan's JSON contract: `fleet diff -o json`
(kind fleet-diff) and saved plans (`fleet plan -o FILE`, kind fleet-plan) both
carry it; it changes only when a field changes meaning or goes.
"""

from __future__ import annotations

from collections import Counter

from pydantic import Field

from reconciler.core.actions import (
    ACTION_TYPES,
    DISRUPTIVE,
    Action,
    ActionBase,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    AgentRestart,
    AgentStart,
    AgentStop,
    Change,
    CredentialIssue,
    CredentialRevoke,
    HostCreate,
    HostDestroy,
    HostReplace,
    HostSnapshot,
    HostStart,
    ImageBuild,
    ImageDestroy,
    Kind,
    MessageSend,
    RelayStart,
    RelayStop,
    NetworkCreate,
    Op,
    RestoreSpec,
    RouteSpec,
    RouteUpdate,
    VolumePurge,
    WorkspacePurge,
    WorkspacePrepare,
    WorkspaceRelease,
    parse_action,
)
from reconciler.core.frozen import FrozenDict, FrozenMap
from reconciler.core.model import Frozen

FORMAT_VERSION = 1

# how the summary counts the host side effects (one, several): "1 image to build"
EFFECT_WORDS: dict[str, tuple[str, str]] = {
    "build": ("image to build", "images to build"),
    "snapshot": ("snapshot to take", "snapshots to take"),
    "prepare": ("workspace to prepare", "workspaces to prepare"),
    "release": ("workspace to release", "workspaces to release"),
    "purge": ("volume to purge", "volumes to purge"),
}


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
    # engines that could not be observed (engine -> why): nothing planned there
    unreachable: FrozenMap[str, str] = Field(default_factory=FrozenDict)

    @property
    def empty(self) -> bool:
        return not self.actions

    def counts(self) -> Counter[str]:
        return Counter(a.op for a in self.actions)

    def summary(self) -> str:
        if self.empty:
            return f"fleet {self.fleet} is up to date"
        c: Counter[str] = Counter(a.op for a in self.actions if a.SUMMARY is None)
        effects = Counter(a.SUMMARY for a in self.actions if a.SUMMARY is not None)
        order = ["create", "join", "replace", "restart", "start", "stop", "destroy", "route", "message"]
        order += sorted(op for op in c if op not in order)  # ops added later go last
        parts = [f"{c[op]} {EFFECT_WORDS[op][c[op] != 1]}" if op in EFFECT_WORDS else f"{c[op]} to {op}"
                 for op in order if c.get(op) and op != "message"]
        if c.get("message"):
            parts.append(f"{c['message']} first message{'s' if c['message'] != 1 else ''} to send")
        for (noun, verb), n in sorted(effects.items()):  # "1 credential to issue", "1 network to create"
            parts.append(f"{n} {noun}{'s' if n != 1 else ''} {verb}")
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


__all__ = [
    "ACTION_TYPES", "Action", "ActionBase", "AgentCreate", "AgentDestroy", "AgentReplace", "AgentRestart",
    "AgentStart", "AgentStop", "Change", "CredentialIssue", "CredentialRevoke", "DISRUPTIVE", "FORMAT_VERSION", "Field", "HostCreate", "HostDestroy",
    "HostReplace", "HostStart", "ImageDestroy", "Kind", "MessageSend", "NetworkCreate", "Op", "Plan", "RelayStart", "RelayStop", "RouteSpec", "RouteUpdate",
    "parse_action",
    "EFFECT_WORDS", "HostSnapshot", "ImageBuild", "RestoreSpec", "VolumePurge", "WorkspacePrepare", "WorkspaceRelease", "WorkspacePurge",
]
