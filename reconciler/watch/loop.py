"""The watch loop: `fleet apply --watch` keeps the fleet matching fleet.yaml.

A controller in the Kubernetes sense, built only from the pipeline every command
uses: each pass is load (when the file changed) -> observe -> reconcile ->
execute. The loop decides nothing about the fleet; it decides *when* to run a
pass (a save, a Docker event for this fleet's containers, the periodic resync,
a backoff expiring, the engine coming back) and holds back actions whose
resource is in backoff (see backoff.py). Passes are level-triggered: every pass
observes afresh, so a missed or duplicated event costs nothing.

Safety: a file that is empty, half-written or invalid changes nothing (its
problems are printed, the last good spec stays in force); a file naming another
fleet is refused; what a pass will do (destroys included) is printed before it
is done. One watcher per fleet: the fleet lock is held for the whole session.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from reconciler.engine import pipeline
from reconciler.view import render
from reconciler.core.backoff import Backoff, token_of
from reconciler.core.errors import FleetError, ValidationFailed, display_path
from reconciler.engine.events import Event, Result
from reconciler.load.loader import load
from reconciler.state.lock import fleet_lock
from reconciler.core.model import Desired, Observed
from reconciler.core.reconcile import Options
from reconciler.watch.remote import RemoteEngines
from reconciler.watch.triggers import DockerEvents, FileWatch, Trigger, Waker
from reconciler.watch.view import View, make_view, stamp

RESYNC = 30.0  # seconds between full re-observations when nothing else happens
ENGINE_RETRY_CAP = 10.0  # the engine is re-tried after 1, 2, 4, 8, 10, 10 ... s
MID_SAVE = 0.3  # a file not ending in a newline, written less than this ago, is re-read later


def build_contexts(desired: Desired) -> set[Path]:
    """Directories whose files go into an image build: a change there is a change
    to fleet.yaml's meaning (the image tag is a hash of the context)."""
    out = set()
    for item in list(desired.hosts.values()) + list(desired.agents.values()):
        if item.image.build is not None:
            out.add(item.image.build.context)
    return out


class Watcher:
    def __init__(
        self, path: Path, desired: Desired, view: View, resync: float = RESYNC, prune: bool = True,
        parallel: int = 8, verbose: bool = False, down_on_exit: bool = False, allow_mass_destroy: bool = False,
    ):
        self.path = path
        self.shown = display_path(path)
        self.desired = desired
        self.fleet = desired.fleet
        self.view = view
        self.resync = resync
        self.options = Options(prune=prune)
        self.parallel = parallel
        self.verbose = verbose
        self.down_on_exit = down_on_exit
        self.allow_mass_destroy = allow_mass_destroy
        self.accepted = desired  # the spec in force; a save is checked before it replaces this one
        self.unchecked = False  # self.desired is a new save not yet checked for mass destroys
        self.held_spec: Desired | None = None  # a save held until confirmed (destroys most agents)
        self.confirmed = False
        self.stdin_reader: threading.Thread | None = None
        self.waker = Waker()
        self.backoff = Backoff()
        self.cancel = threading.Event()
        self.stopping = False
        self.stop_reason = ""
        self.signals = 0
        self.good_since = time.time()
        self.again = False  # re-observe right after an apply
        self.next_resync = 0.0
        self.engine_down: str | None = None
        self.engine_attempts = 0
        self.engine_retry_at: float | None = None
        self.recheck_at: float | None = None  # the file looked mid-save
        self.observed: Observed | None = None
        self.states: dict[str, str] | None = None
        self.held: set[str] = set()  # actions in backoff already reported
        self.files: FileWatch | None = None
        self.events: DockerEvents | None = None
        self.remote = RemoteEngines()  # engines named by `engine:` that do not answer

    # ------------------------------------------------------------------ signals

    def on_signal(self, signum: int, frame: Any) -> None:
        """First SIGINT/SIGTERM: stop starting actions, let the ones in flight
        finish, then leave. A second one abandons them at once (safe: the next
        apply converges from whatever state is left). No printing here: the
        main thread may be in the middle of a write."""
        self.signals += 1
        if self.signals > 1:
            try:
                os.write(1, b"\nsecond interrupt: abandoning the action in flight; the next apply converges from here\n")
            finally:
                os._exit(0)
        self.stopping = True
        self.stop_reason = signal.Signals(signum).name
        self.cancel.set()
        self.waker.poke(Trigger("signal", self.stop_reason))

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        self.files = FileWatch(self.path, self.waker.poke)
        self.files.update(build_contexts(self.desired))
        self.events = DockerEvents(self.fleet, self.waker.poke, event_keys(self.desired))
        try:
            self.step([Trigger("timer", "start")], reload=False)
            if not self.stopping:
                self.view.line(
                    f"watching {self.shown} for fleet {self.fleet} (resync {self.resync:g}s); "
                    "Ctrl-C stops watching, agents keep running"
                )
            while not self.stopping:
                triggers = self.waker.wait(self.timeout())
                if self.stopping:
                    break
                now = time.monotonic()
                reload = any(t.source == "file" for t in triggers)
                if self.recheck_at is not None and now >= self.recheck_at:
                    reload, self.recheck_at = True, None
                for t in triggers:
                    if t.source == "warn":
                        self.view.error(t.detail)
                    elif t.source == "input":
                        self.on_input(t.detail, triggers)
                due = [t for t in triggers if t.source in ("file", "docker", "engine", "confirm")]
                if self.again:
                    due.append(Trigger("timer", "after apply"))
                    self.again = False
                if now >= self.next_resync:
                    due.append(Trigger("timer", "resync"))
                nxt = None if self.engine_down else self.backoff.next_due()
                if nxt is not None and now >= nxt:
                    due.append(Trigger("timer", "retry"))
                if self.engine_retry_at is not None and now >= self.engine_retry_at:
                    due.append(Trigger("timer", "engine retry"))
                if self.remote.retry_at is not None and now >= self.remote.retry_at:
                    due.append(Trigger("timer", "engine retry"))
                if due or reload:
                    self.step(due, reload)
        finally:
            self.files.close()
            self.events.close()
        kept = "" if self.down_on_exit else f"; fleet {self.fleet}'s agents keep running"
        self.view.line(f"stopped watching ({self.stop_reason or 'done'}){kept}")

    def timeout(self) -> float:
        now = time.monotonic()
        if self.again:
            return 0.0
        deadlines = [self.next_resync]
        # while the engine is away its own retry paces the loop, not the backoff
        retry = None if self.engine_down else self.backoff.next_due()
        for d in (retry, self.engine_retry_at, self.recheck_at, self.remote.retry_at):
            if d is not None:
                deadlines.append(d)
        return max(0.0, min(deadlines) - now)

    # ------------------------------------------------------------------ one pass

    def step(self, triggers: list[Trigger], reload: bool) -> None:
        if reload:
            fresh = self.reload()
            if not fresh and not any(t.source != "file" for t in triggers):
                return
            if fresh:
                triggers = [Trigger("file", self.what_changed(triggers))] + [t for t in triggers if t.source != "file"]
        self.plan_and_apply(why(triggers))

    def what_changed(self, triggers: list[Trigger]) -> str:
        """`fleet.yaml changed`, or the build-context files that did (their
        image is rebuilt), never one named for the other."""
        names: list[str] = []
        for t in triggers:
            if t.source == "file":
                names.extend(n.strip() for n in t.detail.split(",") if n.strip())
        own = self.path.name
        others = [n for n in dict.fromkeys(names) if n != own and n != "..."]
        if not names or own in names or not others:
            return f"{self.shown} changed" + (f" (and build context: {', '.join(others[:3])})" if others and own in names else "")
        return "build context changed: " + ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")

    def reload(self) -> bool:
        """Re-read fleet.yaml. True when it holds a new good spec (now in force);
        False when it is mid-save, invalid or names another fleet (reported,
        nothing changes)."""
        try:
            st = self.path.stat()
            with open(self.path, "rb") as fh:
                fh.seek(max(0, st.st_size - 1))
                last = fh.read(1)
        except FileNotFoundError:
            self.view.error(f"{self.shown} is gone (being saved?); still running the spec from {stamp(self.good_since)}")
            return False
        except OSError as exc:
            self.view.error(f"{self.shown}: cannot read: {exc.strerror}; still running the spec from {stamp(self.good_since)}")
            return False
        if st.st_size and last != b"\n" and time.time() - st.st_mtime < MID_SAVE:
            self.recheck_at = time.monotonic() + MID_SAVE  # probably still being written: look again shortly
            return False
        try:
            new = load(self.path)
        except ValidationFailed as exc:
            for p in exc.problems:
                self.view.line(str(p), "red")
            n = len(exc.problems)
            self.view.error(
                f"{self.shown} has {n} problem{'s' if n != 1 else ''}: nothing changed; "
                f"still running the last good spec (from {stamp(self.good_since)})"
            )
            return False
        except FleetError as exc:
            self.view.error(f"{exc}; nothing changed, still running the last good spec (from {stamp(self.good_since)})")
            return False
        except Exception as exc:  # a loader bug must not end a long-running watcher
            self.view.error(
                f"{self.shown}: cannot load ({exc.__class__.__name__}: {exc}); nothing changed, "
                f"still running the last good spec (from {stamp(self.good_since)})"
            )
            return False
        if new.fleet != self.fleet:
            self.view.error(
                f"{self.shown} now names fleet {new.fleet!r}, but this watcher runs fleet {self.fleet!r}: refusing the "
                f"change (applying it would orphan {self.fleet}'s agents). Put the name back, or stop the watcher, "
                f"`fleet destroy` the old fleet and watch again"
            )
            return False
        self.desired = new
        self.unchecked = not self.allow_mass_destroy  # checked against mass destroys by the next pass
        self.good_since = time.time()
        if self.files is not None:
            self.files.update(build_contexts(new))
        if self.events is not None:
            self.events.update(event_keys(new))  # an engine the save adds
        return True

    def plan_and_apply(self, why_text: str) -> None:
        now = time.monotonic()
        self.next_resync = now + self.resync
        try:
            snap = pipeline.plan(self.desired, self.options)
        except FleetError as exc:  # EngineUnavailable, or another provider's observation failed
            self.engine_lost(str(exc), why_text)
            return
        except Exception as exc:  # unexpected: report and retry rather than die
            self.engine_lost(f"observing fleet {self.fleet} failed ({exc.__class__.__name__}: {exc})", why_text)
            return
        self.engine_back()
        lines = self.remote.seen(snap.plan, now)
        for text, is_error in lines:
            if is_error:
                self.view.error(text)
            else:
                self.view.line(text, "green")
        if self.remote.came_back(lines):
            self.backoff.clear()  # what failed while it was away gets a fresh start
        if self.unchecked:
            self.unchecked = False
            if self.hold_mass_destroy(snap, why_text):
                self.plan_and_apply("resync")  # the spec in force (the previous one) keeps healing
                return
            self.accepted, self.held_spec = self.desired, None
        self.observed = snap.observed
        runnable, held = self.backoff.split(snap.plan, self.desired, now)
        self.show_states(snap.observed, held)
        for key in sorted(set(held) - self.held):
            if key.startswith("route:"):
                continue  # the route table follows its agents: an internal detail, not news
            entry = self.backoff.entries.get(key)
            kind, _, name = key.partition(":")
            name = name.split(":", 1)[0]
            self.view.line(f"{kind} {name}: next attempt in {held[key]:.0f}s ({entry.error if entry else 'backoff'})", "yellow")
        self.held = set(held)
        if runnable.empty or self.stopping:
            return
        self.view.line(f"{why_text}: {runnable.summary()}", "bold")
        for line in render.plan_lines(runnable, verbose=self.verbose):
            self.view.line(line.plain)
        started = time.monotonic()
        # through the pipeline's apply, like `fleet apply` (its bookkeeping included)
        result = pipeline.apply_plan(pipeline.Snapshot(snap.desired, snap.observed, runnable), parallel=self.parallel,
                                     on_event=self.on_event, cancel=self.cancel)
        self.report(runnable.fleet, result, time.monotonic() - started)
        self.again = True

    def hold_mass_destroy(self, snap: pipeline.Snapshot, why_text: str) -> bool:
        """A save whose plan destroys more than half of the fleet's agents is
        held (reconcile.mass_destroy decides): shown, not applied, the previous
        spec kept in force, until confirmed on this terminal. True when held."""
        from reconciler.core.reconcile import mass_destroy

        counts = None if self.confirmed else mass_destroy(snap.plan, snap.observed)
        self.confirmed = False
        if counts is None:
            return False
        gone, total = counts
        self.held_spec, self.desired = self.desired, self.accepted
        self.view.line(f"{why_text}: {snap.plan.summary()}", "bold")
        for line in render.plan_lines(snap.plan, verbose=self.verbose):
            self.view.line(line.plain)
        where = (
            "type yes and Enter here to apply it"
            if self.confirm_on_terminal()
            else "no terminal to confirm on: restart the watch with --allow-mass-destroy to apply such saves"
        )
        self.view.error(
            f"held: this save would destroy {gone} of the fleet's {total} agents (more than half); nothing changed, "
            f"the previous spec stays in force. {where}; or save the file again"
        )
        return True

    def confirm_on_terminal(self) -> bool:
        """Read answers from the watch's terminal (only when stdin is one)."""
        import sys

        try:
            tty = sys.stdin.isatty()
        except (ValueError, AttributeError):
            tty = False
        if not tty:
            return False
        if self.stdin_reader is None:
            def read() -> None:
                for line in sys.stdin:
                    self.waker.poke(Trigger("input", line.strip()))

            self.stdin_reader = threading.Thread(target=read, name="fleet-watch-confirm", daemon=True)
            self.stdin_reader.start()
        return True

    def on_input(self, text: str, triggers: list[Trigger]) -> None:
        if self.held_spec is None or not text:
            return
        if text.lower() in ("y", "yes"):
            self.desired, self.held_spec = self.held_spec, None
            self.unchecked, self.confirmed = True, True
            self.view.line("confirmed: applying the held save", "bold")
            triggers.append(Trigger("confirm", "held save confirmed"))
        else:
            self.view.line("not confirmed (type yes to apply the held save); the previous spec stays in force", "yellow")

    def on_event(self, ev: Event) -> None:
        a = ev.action
        now = time.monotonic()
        if ev.kind == "done":
            self.backoff.succeeded(a.id, token_of(a, self.desired), now)
            self.view.line("  " + render.event_line("done", a) + (f" ({ev.note})" if ev.note else ""), "green")
        elif ev.kind == "failed":
            wait = self.backoff.failed(a.id, token_of(a, self.desired), now, ev.error or "")
            self.held.add(a.id)  # already said when it is retried
            self.view.error(f"  {render.event_line('failed', a, ev.error)}; retrying in {wait:g}s")
        elif ev.kind == "skipped":
            self.view.line("  " + render.event_line("skipped", a, ev.error), "yellow")

    def report(self, fleet: str, result: Result, seconds: float) -> None:
        n = len(result.done)
        if result.ok:
            text = f"fleet {fleet}: {n} action{'s' if n != 1 else ''} done in {seconds:.2f}s"
            self.view.line(text, "green")
        else:
            text = f"fleet {fleet}: {n} done, {len(result.failed)} failed, {len(result.skipped)} skipped"
            text += " (interrupted)" if result.interrupted else "; failed actions are retried with backoff"
            self.view.line(text, "red")
        self.view.applied(text, result.ok)

    def show_states(self, observed: Observed, held: dict[str, float]) -> None:
        """Tell the view; in log form, one line per agent whose state changed."""
        self.view.status(self.desired, observed, held)
        states = {}
        for r in render.status_rows(self.desired, observed):
            states[r.agent] = render.state_text(r)
        if self.states is not None:
            for name in sorted(set(states) | set(self.states)):
                before, after = self.states.get(name, "missing"), states.get(name, "gone")
                if before != after:
                    self.view.line(f"agent {name}: {before} -> {after}", "dim")
        self.states = states

    # ------------------------------------------------------------------ engine

    def engine_lost(self, message: str, why_text: str = "") -> None:
        """Observation failed (the engine is away): say so once, retry with a
        growing delay; the Docker events thread also pokes when it is back."""
        self.engine_attempts += 1
        wait = min(ENGINE_RETRY_CAP, 2.0 ** (self.engine_attempts - 1))
        self.engine_retry_at = time.monotonic() + wait
        if self.engine_down is None:
            self.engine_down = message
            self.view.error(f"{message}; still watching, retrying until it answers")
        elif why_text.startswith(f"{self.shown} changed"):
            self.view.line(f"{self.shown} changed; it is applied once the engine answers again", "yellow")

    def engine_back(self) -> None:
        self.engine_retry_at = None
        self.engine_attempts = 0
        if self.engine_down is not None:
            self.engine_down = None
            self.backoff.clear()  # what failed while it was away gets a fresh start
            self.view.line("Docker engine answers again: converging", "green")

    # ------------------------------------------------------------------ exit

    def down(self) -> int:
        """--down-on-exit: destroy everything the fleet owns, through the same
        pipeline as `fleet destroy`."""
        self.view.line(f"--down-on-exit: destroying fleet {self.fleet}", "bold")
        try:
            snap = pipeline.destroy_snapshot(self.desired)
        except FleetError as exc:
            self.view.error(f"cannot destroy fleet {self.fleet}: {exc}")
            return 1
        if snap.plan.empty:
            self.view.line(f"fleet {self.fleet} has nothing running")
            return 0
        for line in render.plan_lines(snap.plan):
            self.view.line(line.plain)
        started = time.monotonic()
        result = pipeline.apply_plan(snap, parallel=self.parallel, on_event=self.on_event)
        self.report(self.fleet, result, time.monotonic() - started)
        return 0 if result.ok else 1


def event_keys(desired: Desired) -> list[str]:
    """The Docker engines whose events the watcher follows: the local one and each
    engine the fleet names or still has resources on."""
    return [k for k in pipeline.providers_of(desired) if k == "docker" or k.startswith("docker@")]


def why(triggers: list[Trigger]) -> str:
    """A short reason for a pass: `fleet.yaml changed`, `agent web exited 3`."""
    seen: list[str] = []
    for t in triggers:
        text = t.detail or t.source
        if text not in seen:
            seen.append(text)
    if not seen:
        return "resync"
    return ", ".join(seen[:3]) + (f" and {len(seen) - 3} more" if len(seen) > 3 else "")


def run_watch(
    path: Path, *, watch: bool = True, resync: float | None = None, down_on_exit: bool = False, prune: bool = True,
    parallel: int = 8, dry_run: bool = False, verbose: bool = False, allow_mass_destroy: bool = False,
) -> int:
    """`fleet apply --watch`: returns the exit code."""
    if not watch:
        raise FleetError("--resync and --down-on-exit only apply to --watch")
    if dry_run:
        raise FleetError("--dry-run and --watch do not combine; preview with `fleet diff`")
    period = RESYNC if resync is None else resync
    if period <= 0:
        raise FleetError(f"--resync must be a positive number of seconds (found {period:g})")
    desired = load(path)  # a file invalid from the start: every problem, exit 1
    with fleet_lock(desired.fleet, wait=False):
        view = make_view(display_path(path), desired.fleet, period)
        watcher = Watcher(
            path, desired, view, resync=period, prune=prune, parallel=parallel, verbose=verbose, down_on_exit=down_on_exit,
            allow_mass_destroy=allow_mass_destroy,
        )
        previous = {s: signal.signal(s, watcher.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            watcher.run()
            if down_on_exit:
                code = watcher.down()
        finally:
            view.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            watcher.waker.close()
    return code
