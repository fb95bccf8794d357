"""Saved plans: `fleet plan --out plan.json` and `fleet apply plan.json`.

A saved plan is what a reviewer approved: the resolved desired state, the exact
actions, and a fingerprint of the observed state they were computed from. Applying
it never reads fleet.yaml again; it re-observes, refuses when the world moved since
("plan is stale"), and then executes exactly the saved actions.

The file holds env values as fleet.yaml does (an agent needs them), never
credential values: grants are names, tokens live in the credential store.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from reconciler import __version__
from reconciler.core.errors import FleetError, display_path
from reconciler.state.home import write_atomic
from reconciler.core.model import Desired, Frozen, Observed
from reconciler.core.plan import FORMAT_VERSION, Plan
from reconciler.core.reconcile import Options

KIND: Literal["fleet-plan"] = "fleet-plan"
MAX_BYTES = 64 * 1024 * 1024


class StalePlan(FleetError):
    """The world changed between `fleet plan --out` and `fleet apply`."""


class ObservedRef(Frozen):
    """One observed resource as the fingerprint saw it (to explain staleness)."""

    kind: Literal["host", "agent"]
    name: str
    id: str
    state: str
    spec_hash: str


class PlanOptions(Frozen):
    prune: bool = True
    targets: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()


class SavedPlan(Frozen):
    kind: Literal["fleet-plan"] = KIND
    format_version: int = FORMAT_VERSION
    fleet_version: str
    fleet: str
    file: str
    created: str
    spec_hash: str
    observed_fingerprint: str
    observed: tuple[ObservedRef, ...] = ()
    options: PlanOptions = Field(default_factory=PlanOptions)
    desired: Desired
    plan: Plan


def observed_refs(observed: Observed) -> tuple[ObservedRef, ...]:
    refs = [ObservedRef(kind="host", name=h.name, id=h.id, state=h.state, spec_hash=h.spec_hash) for h in observed.hosts]
    refs += [ObservedRef(kind="agent", name=a.name, id=a.id, state=a.state, spec_hash=a.spec_hash) for a in observed.agents]
    return tuple(sorted(refs, key=lambda r: (r.kind, r.name, r.id)))


def make(desired: Desired, observed: Observed, plan: Plan, options: Options | None = None) -> SavedPlan:
    opts = options or Options()
    return SavedPlan(
        fleet_version=__version__,
        fleet=plan.fleet,
        file=str(desired.file),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        spec_hash=desired.spec_hash,
        observed_fingerprint=observed.fingerprint(),
        observed=observed_refs(observed),
        options=PlanOptions(prune=opts.prune, targets=tuple(sorted(opts.targets)), replace=tuple(sorted(opts.replace))),
        desired=desired,
        plan=plan,
    )


def write(path: Path, saved: SavedPlan) -> None:
    """Write atomically, readable by its owner only (it holds env values)."""
    path = Path(path)
    text = saved.model_dump_json(indent=2) + "\n"
    try:
        write_atomic(path, text, mode=0o600)
    except OSError as exc:
        raise FleetError(f"cannot write the plan to {display_path(path)}: {exc.strerror}") from None


def sniff(path: Path) -> dict[str, Any] | None:
    """The parsed JSON object when `path` holds a saved plan (decided by content,
    not by the file name); None for anything else, e.g. a fleet.yaml."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        with open(path, "rb") as fh:
            head = fh.read(64).lstrip()
        if not head.startswith(b"{"):
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        if f'"kind": "{KIND}"' in text[:4096]:
            raise FleetError(f"{display_path(path)}: a saved fleet plan, but not valid JSON ({exc}); was it cut short?") from None
        return None
    if isinstance(data, dict) and data.get("kind") in (KIND, "fleet-diff"):
        return data
    return None


def read(path: Path, data: dict[str, Any] | None = None) -> SavedPlan:
    """Parse and check a saved plan; refuses other formats and other versions."""
    shown = display_path(path)
    data = data if data is not None else sniff(path)
    if data is None:
        raise FleetError(f"{shown}: not a saved fleet plan (make one with `fleet plan --out {shown}`)")
    if data.get("kind") == "fleet-diff":
        raise FleetError(
            f"{shown}: this is `fleet diff -o json` output, not a saved plan; make one with `fleet plan --out {shown}`"
        )
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise FleetError(
            f"{shown}: plan format version {version!r} is not supported (this fleet reads version {FORMAT_VERSION}); "
            "make a new plan with this fleet"
        )
    made_by = data.get("fleet_version")
    if made_by != __version__:
        raise FleetError(
            f"{shown}: plan was made by fleet {made_by}, this is fleet {__version__}; "
            "make a new plan with this version (`fleet plan --out`)"
        )
    try:
        saved = SavedPlan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise FleetError(f"{shown}: not a valid fleet plan ({where}: {first['msg']})") from None
    if saved.plan.fleet != saved.fleet or saved.desired.fleet != saved.fleet:
        raise FleetError(f"{shown}: the plan is inconsistent (it names fleets {saved.fleet}, {saved.plan.fleet}, {saved.desired.fleet})")
    if saved.desired.spec_hash != saved.spec_hash:
        raise FleetError(f"{shown}: the plan was modified after it was made (its desired state does not match its spec hash)")
    return saved


def check_fleet(actual: str, expected: str | None, source: str, what: str = "this plan") -> None:
    """Refuse a plan (or file) made for another fleet than the one the user named."""
    if expected is not None and expected != actual:
        raise FleetError(f"{what} is for fleet {actual}, not {expected} ({source}); nothing changed")


def _describe(ref: ObservedRef) -> str:
    return f"{ref.kind} {ref.name} ({ref.id[:12]}, {ref.state})"


def staleness(saved: SavedPlan, observed: Observed) -> list[str]:
    """What differs between the world the plan saw and the world now."""
    if observed.fingerprint() == saved.observed_fingerprint:
        return []
    then = {(r.kind, r.name, r.id): r for r in saved.observed}
    now = {(r.kind, r.name, r.id): r for r in observed_refs(observed)}
    reasons: list[str] = []
    for key in sorted(set(then) - set(now)):
        reasons.append(f"{_describe(then[key])} is gone")
    for key in sorted(set(now) - set(then)):
        reasons.append(f"{_describe(now[key])} appeared")
    for key in sorted(set(then) & set(now)):
        a, b = then[key], now[key]
        if a.state != b.state:
            reasons.append(f"{a.kind} {a.name} was {a.state}, is now {b.state}")
        elif a.spec_hash != b.spec_hash:
            reasons.append(f"{a.kind} {a.name} changed its spec")
    return reasons or ["the observed state changed"]


def check_fresh(saved: SavedPlan, observed: Observed) -> None:
    reasons = staleness(saved, observed)
    if reasons:
        shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
        raise StalePlan(
            f"plan is stale: fleet {saved.fleet} changed since the plan was made ({shown}); "
            "nothing changed. Make a new plan with `fleet plan --out`"
        )


def check_builds(saved: SavedPlan) -> None:
    """A build the plan would run must still have the context it was planned
    with, or the image built would not be the one reviewed."""
    from reconciler.load.loader import context_hash

    seen: set[str] = set()
    for action in saved.plan.actions:
        if action.op not in ("create", "join", "replace", "build"):
            continue
        images = [rec.image for rec in (action.desired_host, action.desired_agent) if rec is not None]
        images += [action.image] if action.image is not None else []  # an image build action
        for image in images:
            build = image.build
            if build is None or image.ref in seen:
                continue
            seen.add(image.ref)
            if not build.context.is_dir():
                raise StalePlan(f"plan is stale: build context {build.context} of {action.kind} {action.name} is gone; nothing changed")
            if context_hash(build.context, build.dockerfile, dict(build.args)) != build.context_hash:
                raise StalePlan(
                    f"plan is stale: build context {build.context} of {action.kind} {action.name} changed since the "
                    "plan was made; nothing changed. Make a new plan with `fleet plan --out`"
                )


def check_location(path: Path, saved: SavedPlan, observed: Observed) -> None:
    """A saved plan decides privileges as fleet.yaml does, but is written after
    the agents' containers exist, so it cannot be mounted read-only into them.
    Refuse one lying where an agent of this fleet can write: a shared workspace
    (as planned, or as the running containers have it) or a workspace copy or
    worktree under $FLEET_HOME. Also refuse a planned workspace that validation
    would refuse (`/`, $HOME, a folder holding $FLEET_HOME...)."""
    from reconciler.load import pathrules
    from reconciler.state.home import fleet_home

    try:
        where = pathrules.real(path)
    except (pathrules.PathLoop, OSError):
        raise FleetError(f"{display_path(path)}: cannot resolve the plan's path; nothing changed") from None
    writable: dict[str, Path] = {"workspace copies and worktrees under $FLEET_HOME": fleet_home() / "workspaces"}
    for rec in list(saved.desired.hosts.values()) + list(saved.desired.agents.values()):
        if rec.workspace is None:
            continue
        why = pathrules.workspace_refusal(rec.workspace.path)
        if why:
            raise FleetError(f"{display_path(path)}: the plan gives {rec.name} the workspace {why}; nothing changed")
        if rec.provider == "docker" and rec.workspace.mode == "shared":
            writable[f"the workspace of {rec.name}"] = rec.workspace.path
    for obs in list(observed.hosts) + list(observed.agents):
        ws = obs.spec.get("workspace") if isinstance(obs.spec, dict) else None
        if obs.provider == "docker" and isinstance(ws, dict) and ws.get("mode", "shared") == "shared" and ws.get("path"):
            writable[f"the workspace of running {obs.name}"] = Path(ws["path"])
    for what, folder in writable.items():
        try:
            folder = pathrules.real(folder)
        except (pathrules.PathLoop, OSError):
            continue
        if where == folder or folder in where.parents:
            raise FleetError(
                f"{display_path(path)}: the plan lies in {what} ({folder}), where an agent can rewrite it; "
                "save plans outside agents' workspaces; nothing changed"
            )
