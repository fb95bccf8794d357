"""What the host side-effect actions leave in the execution state, and how
the creates after them read it: the mounts a `workspace prepare` made, the id
a `host snapshot` took (for the replace that restores it). No decisions: the
plan says which action's result to read (core/effects_hosts.py).

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from reconciler.core.errors import FleetError
from reconciler.core.model import DesiredAgent
from reconciler.core.outcome import Outcome
from reconciler.core.plan import HostCreate, HostReplace
from reconciler.engine.state import Context
from reconciler.providers.base import NO_RESTORE, AgentExtras, HostExtras
from reconciler.state.workspaces import Mounts

MOUNTS = "mounts"  # Outcome.values key: the JSON of the Mounts a prepare made
SNAPSHOT = "snapshot"  # Outcome.values key: the snapshot id a host snapshot took


def prepare_id(owner: str) -> str:
    """The id of the `workspace prepare` action of `owner` (core/effects_hosts.py names it so)."""
    return f"workspace:{owner}:prepare"


def mounts_outcome(mounts: Mounts, note: str | None = None) -> Outcome:
    data = {"workspace": str(mounts.workspace), "extra": dict(mounts.extra), "env": dict(mounts.env),
            "read_only": dict(mounts.read_only)}
    return Outcome(note=note, values={MOUNTS: json.dumps(data, sort_keys=True)})


def mounts_of(ctx: Context, owner: str) -> Mounts | None:
    """The mounts this plan's `workspace prepare` of `owner` made (None: no such action)."""
    done = ctx.state.outcome(prepare_id(owner))
    if done is None or MOUNTS not in done.values:
        return None
    data = json.loads(done.values[MOUNTS])
    return Mounts(workspace=Path(data["workspace"]), extra=data["extra"], env=data["env"], read_only=data["read_only"])


def host_extras(ctx: Context, owner: str) -> HostExtras | None:
    mounts = mounts_of(ctx, owner)
    return HostExtras(workspace=mounts) if mounts is not None else None


def with_workspace(ctx: Context, agent: DesiredAgent, extras: AgentExtras | None = None) -> AgentExtras | None:
    """`extras` with the agent's prepared workspace; None stays None (the
    provider's old path) when the plan prepared nothing for it."""
    mounts = mounts_of(ctx, agent.name)
    if mounts is None:
        return extras
    return replace(extras if extras is not None else AgentExtras(), workspace=mounts)


def restore_of(ctx: Context, a: HostCreate | HostReplace) -> str | None:
    """The snapshot id the plan chose for this create (None: the action has no
    `restore`, a plan saved before restore was resolved when planning)."""
    spec = a.restore
    if spec is None:
        return None
    if spec.snapshot:
        return spec.snapshot
    if spec.taken_by:
        done = ctx.state.outcome(spec.taken_by)
        if done is None:
            raise FleetError(f"internal: {a.id} restores the snapshot of {spec.taken_by}, which did not run")
        return done.values.get(SNAPSHOT) or NO_RESTORE
    return NO_RESTORE
