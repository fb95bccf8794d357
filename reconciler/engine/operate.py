"""Working with running agents: resolve a name to its running agent, then hand
the work (logs, exec, attach, message) to the agent's provider.

Resolution reads the fleet's file and observes once, like every command, so an
agent is always found where fleet put it, whichever provider that is.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.engine import pipeline
from reconciler.core.errors import FleetError
from reconciler.load.loader import did_you_mean, load
from reconciler.core.model import Desired, DesiredAgent, Observed, ObservedAgent
from reconciler.providers.base import Provider, get_provider


@dataclass(frozen=True)
class Target:
    desired: Desired
    observed: Observed
    agent: ObservedAgent
    spec: DesiredAgent | None

    @property
    def provider(self) -> Provider:
        return get_provider(self.agent.provider)


def context(path: Path | None) -> tuple[Desired, Observed]:
    desired = load(path)
    return desired, pipeline.observe(desired.fleet, pipeline.providers_of(desired))


def resolve(desired: Desired, observed: Observed, name: str, running: bool = False) -> Target:
    """The observed agent called `name`, or a clear error naming the known ones.
    `running`: the work needs the agent running (exec, attach, message), so a
    disabled agent or one stopped with `fleet stop` is refused with the way out."""
    found = [a for a in observed.agents if a.name == name]
    spec = desired.agents.get(name)
    if running and spec is not None and not spec.enabled:
        raise FleetError(
            f"agent '{name}' is disabled (enabled: false in {desired.file.name}); set enabled: true there "
            "and run `fleet apply` to run it"
        )
    if not found:
        if spec is None:
            known = ", ".join(sorted(desired.agents)) or "none"
            raise FleetError(f"no agent '{name}' in fleet {desired.fleet} (agents: {known}){did_you_mean(name, desired.agents)}")
        if not spec.enabled:
            raise FleetError(f"agent '{name}' is disabled (enabled: false in {desired.file.name})")
        raise FleetError(f"agent '{name}' has no container yet; run `fleet apply` first")
    best = sorted(found, key=lambda a: (a.state == "running", a.created or ""), reverse=True)[0]
    if running and spec is not None:
        from reconciler.core.reconcile import user_stopped

        if user_stopped(spec, best):
            raise FleetError(f"agent '{name}' is stopped (fleet stop); `fleet start {name}` starts it")
    return Target(desired, observed, best, spec)


def resolve_many(desired: Desired, observed: Observed, names: list[str], all_agents: bool) -> list[Target]:
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


def verb_snapshot(path: Path | None, verb: str, names: list[str], all_agents: bool) -> pipeline.Snapshot:
    """Load, observe and plan `fleet stop|start|restart` (verbs.py decides)."""
    from reconciler.engine.verbs import plan_verb

    desired, observed = context(path)
    return pipeline.Snapshot(desired, observed, plan_verb(desired, observed, verb, names, all_agents))  # type: ignore[arg-type]


def remember(snap: pipeline.Snapshot, verb: str, names: list[str], all_agents: bool) -> list[str]:
    """Record (stop, before anything is executed) or forget (start, restart:
    once it runs again) the person's stop of each agent the verb names, so an
    apply or a watcher running meanwhile never sees it stopped without the
    record and starts it on its own. Returns the names."""
    from reconciler.state import stops
    from reconciler.engine.verbs import select

    fleet = snap.desired.fleet
    picked = select(snap.desired, snap.observed, verb, names, all_agents)  # type: ignore[arg-type]
    for spec, obs in picked:
        if verb == "stop":
            stops.record(fleet, spec.name, obs.id, spec.spec_hash)
        else:
            stops.forget(fleet, spec.name)
    return [spec.name for spec, _ in picked]


def select(snap: pipeline.Snapshot, verb: str, names: list[str], all_agents: bool) -> list:
    from reconciler.engine.verbs import select as pick

    return pick(snap.desired, snap.observed, verb, names, all_agents)  # type: ignore[arg-type]
