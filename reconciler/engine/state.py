"""The execution state: what a plan's finished actions produced, as docker
compose keeps it while it converges a project.

The executor records each action's `Outcome` (ids, published ports, bridge
addresses, tunnel URLs, notes) as the action succeeds, before anything that
depends on it starts; handlers of later actions read it through their
`Context`. `observed()` is the plan-time observation with every finished
action applied (each action class says how in its `after`), which is what the
route action computes routes from: nothing is observed again mid-plan.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from reconciler.core.model import Desired, Observed
from reconciler.core.outcome import Outcome, World
from reconciler.core.plan import Action
from reconciler.providers.base import Provider, get_provider


class ExecState:
    """Thread-safe: actions of one plan run in parallel."""

    def __init__(self, observed: Observed | None):
        self._lock = threading.Lock()
        self._world = World(observed) if observed is not None else None
        self._outcomes: dict[str, Outcome] = {}

    def record(self, action: Action, outcome: Outcome) -> None:
        """`action` succeeded with `outcome`."""
        with self._lock:
            self._outcomes[action.id] = outcome
            if self._world is not None:
                action.after(self._world, outcome)

    def outcome(self, action_id: str) -> Outcome | None:
        """What the action `action_id` produced (None: not done, or not in this plan)."""
        with self._lock:
            return self._outcomes.get(action_id)

    def outcomes(self) -> dict[str, Outcome]:
        with self._lock:
            return dict(self._outcomes)

    def observed(self) -> Observed | None:
        """The world now: the plan's observation with the finished actions applied
        (None when the run was given no observation)."""
        with self._lock:
            return self._world.observed() if self._world is not None else None


@dataclass
class Context:
    """What a handler gets besides its action: the desired state, the providers
    and the execution state."""

    desired: Desired
    state: ExecState
    provider_of: Callable[[str], Provider] = field(default=get_provider)

    @property
    def fleet(self) -> str:
        return self.desired.fleet
