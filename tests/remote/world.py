"""A fleet on the remote engine for the routing and grants tests, made with the
real Docker provider over ssh (`docker@ssh://NAME`) from a real fleet.yaml,
its hosts and agents put on the remote engine (`engine:`), and the real proxy
daemon of a FLEET_HOME of its own."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path

from reconciler.core.frozen import FrozenDict
from reconciler.core.model import Desired, Observed
from reconciler.load.loader import load
from reconciler.providers.base import AgentExtras, get_provider
from reconciler.routing import daemon
from reconciler.routing.process import read_state
from tests.conftest import cleanup_fleet, wait_for

SERVER = "cd /tmp && exec python3 -m http.server {port}"


def on_engine(desired: Desired, engine: str) -> Desired:
    """Every host and agent of `desired` on `engine` (what `engine:` in fleet.yaml sets)."""
    hosts = {n: h.model_copy(update={"engine": engine}) for n, h in desired.hosts.items()}
    agents = {n: a.model_copy(update={"engine": engine}) for n, a in desired.agents.items()}
    return desired.model_copy(update={"hosts": FrozenDict(hosts), "agents": FrozenDict(agents)})


class RemoteFleet:
    def __init__(self, tmp: Path, remote, image: str, yaml: str):
        self.remote = remote
        self.engine = f"ssh://{remote.name}"
        self.name = "r" + uuid.uuid4().hex[:10]
        self.dir = tmp / "project"
        self.dir.mkdir(parents=True)
        (self.dir / "fleet.yaml").write_text(textwrap.dedent(yaml).format(fleet=self.name, image=image))
        self.desired = on_engine(load(self.dir / "fleet.yaml"), self.engine)
        self.provider_key = f"docker@{self.engine}"
        self.provider = get_provider(self.provider_key)

    def create(self, extras: dict[str, AgentExtras] | None = None) -> None:
        net = self.provider
        net.ensure_network()  # type: ignore[attr-defined]
        for host in self.desired.hosts.values():
            self.provider.create_host(self.desired, host)
        for agent in self.desired.agents.values():
            self.provider.create_agent(self.desired, agent, (extras or {}).get(agent.name))

    def observed(self) -> Observed:
        hosts, agents = self.provider.observe(self.name)
        return Observed(fleet=self.name, hosts=tuple(hosts), agents=tuple(agents))

    def container(self, agent: str):
        return self.remote.docker().containers.get(f"fleet_{self.name}_{agent}")

    def cleanup(self) -> None:
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
