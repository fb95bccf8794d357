"""`fleet status`: the facts it shows beyond observation, gathered in one place.

Observation says what exists; status also shows, per container, what
observation leaves out (restarts, last exit code, start time: one `details`
call per provider) and the first-message delivery records. This module only
gathers them; `view/status.py` turns them into typed rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.core.model import Desired, Observed
from reconciler.engine import pipeline
from reconciler.providers.base import get_provider
from reconciler.state import messages


@dataclass(frozen=True)
class StatusFacts:
    observed: Observed
    details: Mapping[str, Mapping[str, Any]]  # container id -> {restarts, exit_code, started_at, running}
    messages: Mapping[str, Mapping[str, Any]]  # agent -> its first-message delivery record


def gather(desired: Desired) -> StatusFacts:
    observed = pipeline.observe(desired.fleet, pipeline.providers_of(desired))
    details: dict[str, Mapping[str, Any]] = {}
    for name in pipeline.providers_of(desired):
        mine = [a for a in observed.agents if a.provider == name]
        if mine:
            details.update(get_provider(name).details(desired.fleet, mine))
    return StatusFacts(observed, details, messages.states(desired.fleet))
