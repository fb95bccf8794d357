"""The watch loop's view of engines named by `engine:` that do not answer.

Such an engine is not an error of the pass (observation records it in
`Observed.unreachable`, and reconcile plans nothing there): the other engines
keep converging. The watcher says so once per outage, naming the engine and what
is unknown there, tries again sooner than the resync (1, 2, 4, 8, 10, 10 ... s)
while any engine is away, and says when it answers again, after which the pass
that noticed converges it (drift made meanwhile included).

Layer `watch`. May import: `core` to `gitops`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from reconciler.core.plan import Plan

RETRY_CAP = 10.0


@dataclass
class RemoteEngines:
    down: dict[str, str] = field(default_factory=dict)  # engine -> why it does not answer
    attempts: int = 0
    retry_at: float | None = None

    def seen(self, plan: Plan, now: float | None = None) -> list[tuple[str, bool]]:
        """After a pass: the lines to show, `(text, is_error)`, for engines that
        stopped answering or answer again; schedules the next try while any is away."""
        now = time.monotonic() if now is None else now
        out: list[tuple[str, bool]] = []
        dark = dict(plan.unreachable)
        for engine in sorted(set(self.down) - set(dark)):
            out.append((f"engine {engine} answers again: converging what runs there", False))
        for engine in sorted(set(dark) - set(self.down)):
            said = next((w for w in plan.warnings if w.startswith(f"engine {engine} unreachable")), None)
            text = said or f"engine {engine} unreachable ({dark[engine]})"
            out.append((f"{text}; still watching, retrying until it answers", True))
        self.down = dark
        if dark:
            self.attempts += 1
            self.retry_at = now + min(RETRY_CAP, 2.0 ** (self.attempts - 1))
        else:
            self.attempts, self.retry_at = 0, None
        return out

    def came_back(self, lines: list[tuple[str, bool]]) -> bool:
        return any(not err for _, err in lines)
