"""A fleet on the remote engine for the routing and grants tests: a real
fleet.yaml whose hosts (and private agents) name `engine: ssh://NAME`, applied
with the real CLI (`fleet apply`) in a FLEET_HOME of its own, whose proxy
daemon keeps the link to the engine. `provider` is a Docker provider on that
engine (over ssh) for assertions about what runs there."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

from reconciler.core.model import Observed
from reconciler.load.loader import load
from reconciler.providers.base import get_provider
from reconciler.routing import daemon
from reconciler.routing.process import read_state
from tests.conftest import cleanup_fleet, run_fleet, wait_for

class RemoteFleet:
    def __init__(self, tmp: Path, remote, image: str, yaml: str, env: dict[str, str]):
        self.remote = remote
        self.engine = f"ssh://{remote.name}"
        self.name = "r" + uuid.uuid4().hex[:10]
        self.env = env
        self.outputs: list[str] = []
        self.dir = tmp / "project"
        self.dir.mkdir(parents=True)
        (self.dir / "fleet.yaml").write_text(
            textwrap.dedent(yaml).format(fleet=self.name, image=image, engine=self.engine))
        self.desired = load(self.dir / "fleet.yaml")
        self.provider_key = f"docker@{self.engine}"
        self.provider = get_provider(self.provider_key)

    def fleet(self, *args: str, input: str | None = None):
        r = run_fleet(*args, cwd=self.dir, env=self.env, input=input)
        self.outputs.append(r.text)
        return r

    def observed(self) -> Observed:
        hosts, agents = self.provider.observe(self.name)
        return Observed(fleet=self.name, hosts=tuple(hosts), agents=tuple(agents))

    def container(self, agent: str):
        return self.remote.docker().containers.get(f"fleet_{self.name}_{agent}")

    def cleanup(self) -> None:
        self.fleet("destroy", "--yes")
        cleanup_fleet(self.remote.docker(), self.name)


def link_state(engine: str) -> dict:
    return ((read_state() or {}).get("links") or {}).get(engine) or {}


def wait_link_up(engine: str, timeout: float = 30) -> dict:
    wait_for(lambda: link_state(engine).get("up"), timeout=timeout, interval=0.05,
             what=f"the link to {engine} up ({link_state(engine)}; {tail_log()})")
    return link_state(engine)


def tail_log(lines: int = 8) -> str:
    try:
        return "\n".join(daemon.log_path().read_text().splitlines()[-lines:])
    except OSError:
        return ""


def as_json(data: bytes) -> dict:
    return json.loads(data)
