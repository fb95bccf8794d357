"""Execute: walk the plan graph with bounded concurrency. No decisions here.

Each action maps to provider calls one-for-one. An action starts once all it
depends on is done; when one fails, what depends on it is skipped (with the
reason) while independent work goes on. Progress goes out as events, so the CLI,
the watch loop and tests can all follow along.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Literal

from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.model import Desired
from reconciler.core.plan import Action, Plan
from reconciler.providers.base import Provider, get_provider

EventKind = Literal["start", "done", "failed", "skipped"]


@dataclass(frozen=True)
class Event:
    kind: EventKind
    action: Action
    error: str | None = None
    note: str | None = None


@dataclass
class Result:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped and not self.interrupted


Hook = Callable[[Action], None]


def _release_workspace(fleet: str, owner: str, spec: dict) -> str | None:
    """A destroyed agent's or host's copy/worktree is removed only when no work
    would be lost; otherwise the note says where it was kept."""
    from reconciler.state import workspaces
    from reconciler.core.model import WorkspaceSpec

    raw = spec.get("workspace")
    if not isinstance(raw, dict) or raw.get("mode", "shared") == "shared":
        return None
    try:
        return workspaces.release(fleet, owner, WorkspaceSpec.model_validate(raw))
    except (FleetError, ValueError) as exc:
        return f"kept workspace of {owner}: {exc}"


def _notes(*notes: object) -> str | None:
    """Join the notes providers returned (None and non-strings are ignored)."""
    text = "; ".join(n for n in notes if isinstance(n, str) and n)
    return text or None


def run_action(desired: Desired, action: Action, provider_of: Callable[[str], Provider] = get_provider) -> str | None:
    """Carry out one action through its provider(s); returns a note for the user, if any."""
    fleet = desired.fleet
    p = provider_of(action.provider) if action.kind != "route" else None
    if action.kind == "host":
        # providers may return a note (Modal: the snapshot taken before a sandbox goes)
        if action.op == "create":
            return _notes(p.create_host(desired, action.desired_host))
        elif action.op == "replace":
            gone = provider_of(action.observed_host.provider).destroy_host(fleet, action.observed_host)
            return _notes(gone, p.create_host(desired, action.desired_host))
        elif action.op == "start":
            p.start_host(fleet, action.observed_host)
        elif action.op == "destroy":
            gone = provider_of(action.observed_host.provider).destroy_host(fleet, action.observed_host)
            return _notes(gone, _release_workspace(fleet, action.name, action.observed_host.spec))
        else:
            raise FleetError(f"internal: no host operation {action.op}")
    elif action.kind == "image":
        return p.remove_image(fleet, action.name)
    elif action.kind == "route":
        from reconciler.routing import sync

        from reconciler.engine import agentnet

        if action.route and action.route.get("remove"):
            note = sync.remove_routes(fleet)
            agentnet.forget_fleet(fleet)
            return note
        note = sync.apply_routes(desired)
        agentnet.refresh(desired)  # running agents resolve names added since they started
        return note
    elif action.op == "message":
        _deliver(desired, action, p)
    elif action.kind == "agent":
        if action.op in ("create", "join"):
            p.create_agent(desired, action.desired_agent)
        elif action.op == "replace":
            provider_of(action.observed_agent.provider).destroy_agent(fleet, action.observed_agent)
            p.create_agent(desired, action.desired_agent)
        elif action.op == "start":
            p.start_agent(fleet, action.observed_agent)
        elif action.op == "restart":
            p.restart_agent(fleet, action.observed_agent)
        elif action.op == "stop":
            p.stop_agent(fleet, action.observed_agent)
        elif action.op == "destroy":
            provider_of(action.observed_agent.provider).destroy_agent(fleet, action.observed_agent)
            if not action.observed_agent.host:
                return _release_workspace(fleet, action.name, action.observed_agent.spec)
        else:
            raise FleetError(f"internal: no agent operation {action.op}")
    else:
        raise FleetError(f"internal: no handler for {action.kind} actions")
    return None


def _deliver(desired: Desired, action: Action, p: Provider) -> None:
    from reconciler.state import messages

    agent = action.desired_agent
    try:
        cid = p.send_message(desired.fleet, agent, agent.message or "")
    except FleetError as exc:
        if action.observed_agent is not None:
            messages.record(desired.fleet, agent.name, action.observed_agent.id, "failed", str(exc))
        raise
    messages.record(desired.fleet, agent.name, cid, "delivered")


def execute(
    desired: Desired,
    plan: Plan,
    parallel: int = 8,
    on_event: Callable[[Event], None] | None = None,
    runner: Callable[[Action], None] | None = None,
    after: dict[str, Hook] | None = None,
    cancel: threading.Event | None = None,
) -> Result:
    """Run every action of `plan`, at most `parallel` at once.

    `runner` replaces the provider calls (route actions, tests); `after` maps an
    op to a hook run when such an action succeeds (e.g. first-message delivery).
    """
    emit = on_event or (lambda e: None)
    run: Callable[[Action], str | None] = runner or (lambda a: run_action(desired, a))
    hooks = after or {}
    result = Result()
    pending = {a.id: a for a in plan.actions}
    finished: set[str] = set()
    bad: dict[str, str] = {}
    running: dict[Future, Action] = {}

    def blocked_by(a: Action) -> str | None:
        for dep in a.depends_on:
            if dep in bad:
                return dep
        return None

    def ready(a: Action) -> bool:
        return all(dep in finished or dep not in plan_ids for dep in a.depends_on)

    plan_ids = set(pending)

    def work(a: Action) -> str | None:
        note = run(a)
        hook = hooks.get(a.op)
        if hook:
            hook(a)
        return note if isinstance(note, str) else None

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="fleet-exec") as pool:
        try:
            while pending or running:
                progressed = True
                while progressed:
                    progressed = False
                    for aid, a in list(pending.items()):
                        dep = blocked_by(a)
                        if dep is not None:
                            del pending[aid]
                            reason = f"skipped: {dep} failed"
                            bad[aid] = reason
                            result.skipped[aid] = reason
                            emit(Event("skipped", a, reason))
                            progressed = True
                if cancel is not None and cancel.is_set():
                    for aid, a in list(pending.items()):
                        result.skipped[aid] = "skipped: interrupted"
                        emit(Event("skipped", a, "interrupted"))
                    pending.clear()
                    result.interrupted = True
                for aid, a in list(pending.items()):
                    if len(running) >= max(1, parallel):
                        break
                    if ready(a):
                        del pending[aid]
                        emit(Event("start", a))
                        running[pool.submit(work, a)] = a
                if not running:
                    if pending:  # a dependency cycle or an unknown id: report, never hang
                        for aid, a in list(pending.items()):
                            result.skipped[aid] = "skipped: unsatisfiable dependency"
                            emit(Event("skipped", a, "unsatisfiable dependency"))
                        pending.clear()
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    a = running.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        finished.add(a.id)
                        result.done.append(a.id)
                        note = fut.result()
                        if note:
                            result.notes.append(note)
                        emit(Event("done", a, note=note))
                    else:
                        if isinstance(exc, ProviderError):
                            msg = exc.detail
                        elif isinstance(exc, FleetError):
                            msg = str(exc)
                        else:
                            msg = f"{exc.__class__.__name__}: {exc}"
                        bad[a.id] = msg
                        result.failed[a.id] = msg
                        emit(Event("failed", a, msg))
        except KeyboardInterrupt:
            result.interrupted = True
            if cancel is not None:
                cancel.set()
            for aid in pending:
                result.skipped[aid] = "skipped: interrupted"
            pending.clear()
            raise
    return result
