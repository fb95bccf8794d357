"""What every fault test checks afterwards: the fleet's containers are exactly
its agents, once each, labelled, running; nothing unlabelled or orphaned carries
the fleet's names; and a further apply has nothing to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, run_fleet, wait_for  # noqa: F401  (wait_for re-exported for the fault tests)


def fleet_file(path: Path, fleet: str, image: str, n: int, round_: int = 0, ports: dict[str, int] | None = None,
               proxy_port: int | None = None) -> Path:
    """`n` private agents a0..a<n-1>; `round_` goes into every agent's env (a
    change of it replaces them all)."""
    lines = [f"fleet: {fleet}"]
    if proxy_port:
        lines.append(f"proxy: {{port: {proxy_port}}}")
    lines += ["defaults:", f"  image: {image}", '  command: ["sleep", "infinity"]', f'  env: {{ROUND: "{round_}"}}', "agents:"]
    for i in range(n):
        if i == 0 and ports:
            lines.append(f"  a{i}: {{ports: {{{', '.join(f'{k}: {v}' for k, v in ports.items())}}}}}")
        else:
            lines.append(f"  a{i}: {{}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Box:
    """One container as a single list call reports it (no per-container inspect,
    which races with the engine finishing what a killed command had asked)."""

    id: str
    name: str
    labels: dict
    status: str


def listed(client, filters: dict) -> list[Box]:
    return [Box(c["Id"], c["Names"][0].lstrip("/"), c.get("Labels") or {}, c.get("State", ""))
            for c in client.api.containers(all=True, filters=filters)]


def by_agent(client, fleet: str) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for c in listed(client, {"label": f"dev.fleet.project={fleet}"}):
        out.setdefault(c.labels.get("dev.fleet.agent") or f"host:{c.labels.get('dev.fleet.host')}", []).append(c)
    return out


def assert_converged(client, fleet: str, agents: set[str], context: str = "") -> dict[str, Box]:
    """Exactly `agents`, one running, labelled container each; returns agent -> container."""
    found = by_agent(client, fleet)
    dupes = {a: [c.name for c in cs] for a, cs in found.items() if len(cs) > 1}
    assert not dupes, f"{context}: duplicate containers {dupes}"
    assert set(found) == agents, f"{context}: agents {sorted(found)} != {sorted(agents)}"
    out = {}
    for agent, (c,) in found.items():
        assert c.status == "running", f"{context}: {c.name} is {c.status}"
        assert c.labels.get("dev.fleet.spec-hash"), f"{context}: {c.name} has no spec hash"
        assert c.labels.get("dev.fleet.kind") == "agent"
        out[agent] = c
    assert_no_strays(client, fleet, context)
    return out


def assert_no_strays(client, fleet: str, context: str = "") -> None:
    """Every container named after the fleet carries its label (none unlabelled,
    none left behind under a fleet name without being observed)."""
    owned = {c.id for c in listed(client, {"label": f"dev.fleet.project={fleet}"})}
    prefix = f"fleet_{fleet}_"
    for c in listed(client, {"name": prefix}):
        if c.name.startswith(prefix):
            assert c.labels.get("dev.fleet.project") == fleet, f"{context}: unlabelled container {c.name}"
            assert c.id in owned, f"{context}: {c.name} is not among the fleet's containers"


def assert_noop(path: Path, context: str = "") -> None:
    r = run_fleet("apply", "--yes", str(path))
    assert r.code == 0 and "is up to date" in r.out, f"{context}: a further apply was not a no-op:\n{r.text}"


def start_fleet(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The real CLI as a subprocess we can kill."""
    full = dict(os.environ, NO_COLOR="1")
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "reconciler", *args], cwd=ROOT, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_after(proc: subprocess.Popen, delay: float) -> str:
    """SIGKILL `proc` after `delay` seconds (or collect it if it finished first);
    returns its output so far."""
    try:
        out, _ = proc.communicate(timeout=delay)
        return out or ""
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        return out or ""


