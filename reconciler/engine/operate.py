"""Working with running agents: resolve a name to its running agent, then hand
the work (logs, exec, attach, message) to the agent's provider.

Resolution reads the fleet's file and observes once, like every command, so an
agent is always found where fleet put it, whichever provider that is.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.engine import pipeline
from reconciler.core.errors import FleetError
from reconciler.load.loader import did_you_mean, load
from reconciler.core.model import Desired, DesiredAgent, Observed, ObservedAgent
from reconciler.providers.base import Provider, get_provider
from reconciler.providers.terminal import DETACH_KEYS, AttachEnd, parse_detach_keys, terminal_size  # noqa: F401  (for the CLI)

if TYPE_CHECKING:
    from reconciler.engine.verbs import Verb


@dataclass(frozen=True)
class ResolvedAgent:
    """An agent of fleet.yaml (or one still running after being removed from
    it) resolved to its container, and the work a person can do with it: the
    CLI asks this, never the provider (only the engine drives providers)."""

    desired: Desired
    observed: Observed
    agent: ObservedAgent  # the container (or Modal process) chosen for the name
    desired_agent: DesiredAgent | None  # its fleet.yaml record; None once removed from the file

    @property
    def provider(self) -> Provider:
        return get_provider(self.agent.key)

    @property
    def fleet(self) -> str:
        return self.desired.fleet

    def logs(self, follow: bool = False, tail: int | None = None, since: float | None = None) -> Iterator[bytes]:
        return self.provider.logs(self.fleet, self.agent, follow=follow, tail=tail, since=since)

    def exec(self, cmd: list[str], workdir: str | None = None, env: dict[str, str] | None = None,
             interactive: bool = False, tty: bool = False) -> int:
        return self.provider.exec(self.fleet, self.agent, cmd, workdir=workdir, env=env, interactive=interactive, tty=tty)

    def details(self) -> dict[str, Any]:
        """Facts observation leaves out (restarts, exit code, start time); {} when gone."""
        return self.provider.details(self.fleet, [self.agent]).get(self.agent.id, {})

    def attach(self, detach_keys: str, replay: int = 24) -> AttachEnd:
        return self.provider.attach(self.fleet, self.agent, detach_keys, replay=replay)

    def send_input(self, data: bytes) -> None:
        self.provider.send_input(self.fleet, self.agent, data)


def context(path: Path | None) -> tuple[Desired, Observed]:
    desired = load(path)
    return desired, pipeline.observe(desired.fleet, pipeline.providers_of(desired))


def resolve(desired: Desired, observed: Observed, name: str, running: bool = False) -> ResolvedAgent:
    """The observed agent called `name`, or a clear error naming the known ones.
    `running`: the work needs the agent running (exec, attach, message), so a
    disabled agent or one stopped with `fleet stop` is refused with the way out."""
    found = [a for a in observed.agents if a.name == name]
    want = desired.agents.get(name)
    if running and want is not None and not want.enabled:
        raise FleetError(
            f"agent '{name}' is disabled (enabled: false in {desired.file.name}); set enabled: true there "
            "and run `fleet apply` to run it"
        )
    if not found:
        if want is None:
            known = ", ".join(sorted(desired.agents)) or "none"
            raise FleetError(f"no agent '{name}' in fleet {desired.fleet} (agents: {known}){did_you_mean(name, desired.agents)}")
        if not want.enabled:
            raise FleetError(f"agent '{name}' is disabled (enabled: false in {desired.file.name})")
        raise FleetError(f"agent '{name}' has no container yet; run `fleet apply` first")
    best = sorted(found, key=lambda a: (a.state == "running", a.created or ""), reverse=True)[0]
    if running and want is not None:
        from reconciler.core.reconcile import user_stopped

        if user_stopped(want, best):
            raise FleetError(f"agent '{name}' is stopped (fleet stop); `fleet start {name}` starts it")
    return ResolvedAgent(desired, observed, best, want)


def resolve_many(desired: Desired, observed: Observed, names: list[str], all_agents: bool) -> list[ResolvedAgent]:
    if all_agents or not names:
        present = sorted({a.name for a in observed.agents})
        if not present:
            raise FleetError(f"fleet {desired.fleet} has no agents running; run `fleet apply` first")
        names = present
    return [resolve(desired, observed, n) for n in names]


_SINCE = re.compile(r"^(\d+)([smhd])$")


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """`10m`, `2h`, `30s`, `1d`, or an ISO timestamp -> epoch seconds."""
    if not text:
        return None
    m = _SINCE.match(text.strip())
    now = time.time() if now is None else now
    if m:
        return now - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise FleetError(f"--since: expected a duration like 10m, 2h, 30s, or an ISO time (found {text!r})") from None


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FleetError(f"-e: expected KEY=VALUE (found {pair!r})")
        env[key] = value
    return env


def verb_snapshot(path: Path | None, verb: Verb, names: list[str], all_agents: bool) -> pipeline.Snapshot:
    """Load, observe and plan `fleet stop|start|restart` (verbs.py decides)."""
    from reconciler.engine.verbs import plan_verb

    desired, observed = context(path)
    return pipeline.Snapshot(desired, observed, plan_verb(desired, observed, verb, names, all_agents))


def remember(snap: pipeline.Snapshot, verb: Verb, names: list[str], all_agents: bool) -> list[str]:
    """Record (stop, before anything is executed) or forget (start, restart:
    once it runs again) the person's stop of each agent the verb names, so an
    apply or a watcher running meanwhile never sees it stopped without the
    record and starts it on its own. Returns the names."""
    from reconciler.state import stops
    from reconciler.engine.verbs import select

    fleet = snap.desired.fleet
    picked = select(snap.desired, snap.observed, verb, names, all_agents)
    for want, obs in picked:
        if verb == "stop":
            stops.record(fleet, want.name, obs.id, want.spec_hash)
        else:
            stops.forget(fleet, want.name)
    return [want.name for want, _ in picked]


def select(snap: pipeline.Snapshot, verb: Verb, names: list[str], all_agents: bool) -> list[tuple[DesiredAgent, ObservedAgent]]:
    from reconciler.engine.verbs import select as pick

    return pick(snap.desired, snap.observed, verb, names, all_agents)
