"""Helpers for the Modal provider's tests: a shared-host fleet.yaml (the seed's
auth-host scenario), reading agents' output, and cleaning up a fleet's sandboxes."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from tests.conftest import run_fleet, wait_for  # noqa: F401  (wait_for re-exported for the Modal tests)

READER = 'echo "{name} ready"; while read line; do echo "{name} got: $line"; done'


def fleet_yaml(fleet: str, proxy_port: int, workspace: Path, *, test_env: str = "", restore: bool = True,
               agents: bool = True, image: str = "python:3.12-slim") -> str:
    """The shared-host scenario: impl-agent (serving web on 3000) and test-agent
    on one Modal host, each a `while read` loop with a first message."""
    agent_block = f"""
        agents:
          impl-agent:
            host: auth-host
            command: {json.dumps(READER.format(name="impl"))}
            message: "Implement JWT authentication"
            ports: {{web: 3000}}
          test-agent:
            host: auth-host
            command: {json.dumps(READER.format(name="test"))}
            message: "Write integration tests"
            {test_env}
    """ if agents else ""
    return textwrap.dedent(f"""
        fleet: {fleet}
        proxy: {{port: {proxy_port}}}
        hosts:
          auth-host:
            provider: modal
            image: {image}
            workspace: {workspace}
            idle_timeout: 600
            timeout: 3600
            {"restore: latest" if restore else ""}
    """) + textwrap.dedent(agent_block)


def fleet(*args: str, env: dict[str, str], input: str | None = None):
    return run_fleet(*args, env=env, input=input)


def exec_text(path: Path, env: dict[str, str], agent: str, script: str) -> str:
    r = fleet("exec", "-f", str(path), agent, "--", "sh", "-c", script, env=env)
    assert r.code == 0, r.text
    return r.out


def got(path: Path, env: dict[str, str], agent: str, who: str) -> list[str]:
    """What an agent's read loop received, from `fleet logs`."""
    r = fleet("logs", "-f", str(path), agent, env=env)
    prefix = f"{who} got: "
    return [ln[len(prefix):] for ln in r.out.replace("\r", "").splitlines() if ln.startswith(prefix)]


def curl(url: str, fleet_home: Path) -> tuple[int, str]:
    args = ["curl", "-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}", "--cacert", str(fleet_home / "ca" / "ca.crt"), url]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=15)
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or 0), body.strip()


def sandboxes(fake: Any, fleet: str, running_only: bool = True) -> list[Any]:
    """The fake's records of this fleet's sandboxes (app fleet-<fleet>)."""

    def pick(core: Any) -> list[Any]:
        apps = {a.id for a in core.apps.values() if a.name == f"fleet-{fleet}"}
        return [s for s in core.sandboxes.values() if s.app_id in apps and (s.running or not running_only)]

    return fake.call(pick)


def terminate_fleet(fake: Any, fleet: str) -> None:
    async def run(core: Any) -> None:
        apps = {a.id for a in core.apps.values() if a.name == f"fleet-{fleet}"}
        for sb in list(core.sandboxes.values()):
            if sb.app_id in apps and sb.result is None:
                await core.terminate(sb)

    fake.call(run)
