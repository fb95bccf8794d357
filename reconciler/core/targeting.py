"""Checks for `--target AGENT` and `--replace AGENT` before anything runs.

`reconcile` quietly ignores names it does not know; a user who typed
`--target web-1` for `web1` must hear about it, with the agents that exist.
"""

from __future__ import annotations

import difflib

from reconciler.core.errors import FleetError
from reconciler.core.model import Desired, Observed
from reconciler.core.reconcile import Options


class BadTarget(FleetError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def lines(self) -> list[str]:
        return list(self.problems)


def _hint(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def options(prune: bool = True, targets: list[str] | None = None, replace: list[str] | None = None) -> Options:
    return Options(prune=prune, targets=frozenset(targets or ()), replace=frozenset(replace or ()))


def check(desired: Desired, observed: Observed | None, opts: Options) -> None:
    """Every --target names an agent of the fleet (in fleet.yaml, or still
    running after being removed from it); every --replace names an enabled agent
    of fleet.yaml inside the targets."""
    known = sorted(desired.agents)
    running = {a.name for a in observed.agents} if observed is not None else set()
    listed = ", ".join(known) or "none"
    problems: list[str] = []
    for name in sorted(opts.targets):
        if name in desired.agents or name in running:
            continue
        if name in desired.hosts:
            on = sorted(a.name for a in desired.agents_on(name))
            problems.append(
                f"--target {name}: '{name}' is a host, not an agent; target its agents instead ({', '.join(on) or 'none'})"
            )
        else:
            problems.append(
                f"--target {name}: fleet {desired.fleet} has no agent '{name}' (known agents: {listed}){_hint(name, known + sorted(running))}"
            )
    for name in sorted(opts.replace):
        agent = desired.agents.get(name)
        if agent is None:
            problems.append(f"--replace {name}: fleet.yaml has no agent '{name}' (known agents: {listed}){_hint(name, known)}")
        elif not agent.enabled:
            problems.append(f"--replace {name}: agent '{name}' is disabled (enabled: false); there is nothing to replace")
        elif opts.targets and name not in opts.targets:
            problems.append(f"--replace {name}: '{name}' is outside the --target selection ({', '.join(sorted(opts.targets))})")
    if problems:
        raise BadTarget(problems)
