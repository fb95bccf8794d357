"""What the executor reports: one typed `Event` per step of an action, and the
`Result` of a whole run. The CLI, the watch loop and tests render or check
these; the engine itself never prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reconciler.core.outcome import Outcome
from reconciler.core.plan import Action

EventKind = Literal["start", "done", "failed", "skipped"]


@dataclass(frozen=True)
class Event:
    """`start`: the action began; `done`: it succeeded (`note` for the user,
    `outcome` what it produced); `failed` (`error` says why); `skipped`
    (`error`: what it waited for that failed, or `interrupted`)."""

    kind: EventKind
    action: Action
    error: str | None = None
    note: str | None = None
    outcome: Outcome | None = None


@dataclass
class Result:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    # action id -> what it produced (the execution state at the end of the run)
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted
