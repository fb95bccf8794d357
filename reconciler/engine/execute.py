"""Execute: walk the plan graph with bounded concurrency. No decisions here.

Each action maps to provider calls one-for-one (engine/handlers.py). An action
starts once all it depends on is done; when one fails, what depends on it is
skipped (with the reason) while independent work goes on. What each action
produced goes into the execution state (engine/state.py) before its dependents
start, so they can read it. Progress goes out as typed events
(engine/events.py), so the CLI, the watch loop and tests can all follow along.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

from reconciler.core.errors import FleetError, ProviderError
from reconciler.core.model import Desired, Observed
from reconciler.core.outcome import Outcome, as_outcome
from reconciler.core.plan import Action, Plan
from reconciler.engine.events import Event, EventKind, Result
from reconciler.engine import handlers_grants  # noqa: F401  (registers the credential and network handlers)
from reconciler.engine import handlers_hosts  # noqa: F401  (registers the host side-effect handlers)
from reconciler.engine import handlers_relays  # noqa: F401  (registers the Modal grants relay handlers)
from reconciler.engine.handlers import run_action
from reconciler.engine.state import Context, ExecState
from reconciler.providers.base import Provider, get_provider

__all__ = ["Event", "EventKind", "ExecState", "Hook", "Result", "execute"]

Hook = Callable[[Action], None]
Runner = Callable[[Action], "Outcome | str | None"]


def _message(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.detail
    if isinstance(exc, FleetError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def execute(
    desired: Desired,
    plan: Plan,
    parallel: int = 8,
    on_event: Callable[[Event], None] | None = None,
    runner: Runner | None = None,
    after: dict[str, Hook] | None = None,
    cancel: threading.Event | None = None,
    observed: Observed | None = None,
    provider_of: Callable[[str], Provider] = get_provider,
) -> Result:
    """Run every action of `plan`, at most `parallel` at once.

    `observed`: what the plan was computed from, the start of the execution
    state (the route action needs it). `runner` replaces the handlers (tests);
    `after` maps an op to a hook run when such an action succeeds.
    """
    emit = on_event or (lambda e: None)
    state = ExecState(observed)
    ctx = Context(desired, state, provider_of)
    run: Runner = runner or (lambda a: run_action(ctx, a))
    hooks = after or {}
    result = Result()
    pending = {a.id: a for a in plan.actions}
    plan_ids = set(pending)
    finished: set[str] = set()
    bad: dict[str, str] = {}
    running: dict[Future[Outcome], Action] = {}
    width = max(1, parallel)

    def blocked_by(a: Action) -> str | None:
        return next((dep for dep in a.depends_on if dep in bad), None)

    def ready(a: Action) -> bool:
        return all(dep in finished or dep not in plan_ids for dep in a.depends_on)

    def work(a: Action) -> Outcome:
        outcome = as_outcome(run(a))
        hook = hooks.get(a.op)
        if hook:
            hook(a)
        state.record(a, outcome)  # before any dependent starts
        return outcome

    def skip(a: Action, reason: str, shown: str) -> None:
        result.skipped[a.id] = reason
        emit(Event("skipped", a, shown))

    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="fleet-exec") as pool:
        try:
            while pending or running:
                progressed = True
                while progressed:
                    progressed = False
                    for aid, a in list(pending.items()):
                        dep = blocked_by(a)
                        if dep is not None:
                            del pending[aid]
                            bad[aid] = reason = f"skipped: {dep} failed"
                            skip(a, reason, reason)
                            progressed = True
                if cancel is not None and cancel.is_set():
                    for a in pending.values():
                        skip(a, "skipped: interrupted", "interrupted")
                    pending.clear()
                    result.interrupted = True
                for aid, a in list(pending.items()):
                    if len(running) >= width:
                        break
                    if ready(a):
                        del pending[aid]
                        emit(Event("start", a))
                        running[pool.submit(work, a)] = a
                if not running:
                    if pending:  # a dependency cycle or an unknown id: report, never hang
                        for a in pending.values():
                            skip(a, "skipped: unsatisfiable dependency", "unsatisfiable dependency")
                        pending.clear()
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    a = running.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        outcome = fut.result()
                        finished.add(a.id)
                        result.done.append(a.id)
                        if outcome.note:
                            result.notes.append(outcome.note)
                        emit(Event("done", a, note=outcome.note, outcome=outcome))
                    else:
                        bad[a.id] = result.failed[a.id] = _message(exc)
                        emit(Event("failed", a, bad[a.id]))
        except KeyboardInterrupt:
            result.interrupted = True
            if cancel is not None:
                cancel.set()
            for aid in pending:
                result.skipped[aid] = "skipped: interrupted"
            pending.clear()
            raise
        finally:
            result.outcomes = state.outcomes()
    return result
