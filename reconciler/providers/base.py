"""The provider interface: what reconcile's plan can ask of Docker or Modal.

Observation is one cheap listing per provider; every mutating method does exactly
one thing to one resource and is idempotent where it can be (destroying what is
already gone is not an error). No method decides anything about the fleet.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Iterator, Protocol, runtime_checkable

from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ObservedAgent, ObservedHost
from reconciler.core.outcome import Outcome

if TYPE_CHECKING:
    from reconciler.providers.terminal import AttachEnd


@runtime_checkable
class Provider(Protocol):
    name: str

    # observe
    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]: ...

    # hosts (shared hosts only: a private agent is its own host)
    # create/start return what they made (id, published ports, address, tunnel
    # URLs, a note: the route action reads them), destroy a note for the user, or None
    def create_host(self, desired: Desired, host: DesiredHost) -> Outcome | None: ...
    def start_host(self, fleet: str, host: ObservedHost) -> Outcome | None: ...
    def destroy_host(self, fleet: str, host: ObservedHost) -> str | None: ...

    # agents
    def create_agent(self, desired: Desired, agent: DesiredAgent) -> Outcome | None: ...
    def start_agent(self, fleet: str, agent: ObservedAgent) -> Outcome | None: ...
    def restart_agent(self, fleet: str, agent: ObservedAgent) -> Outcome | None: ...
    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None: ...
    def destroy_agent(self, fleet: str, agent: ObservedAgent) -> None: ...

    # working with running agents
    def send_message(self, fleet: str, agent: DesiredAgent, text: str) -> str: ...
    def send_input(self, fleet: str, agent: ObservedAgent, data: bytes) -> None: ...
    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]: ...
    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int: ...
    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24) -> AttachEnd: ...
    def details(self, fleet: str, agents: list[ObservedAgent]) -> dict[str, dict]: ...


_FACTORIES: dict[str, str] = {
    "docker": "reconciler.providers.docker.driver:DockerProvider",
    "modal": "reconciler.providers.modal.driver:ModalProvider",
}

_instances: dict[str, Provider] = {}


def get_provider(name: str, factory: Callable[[], Provider] | None = None) -> Provider:
    """The provider called `name`, created on first use (lazy import)."""
    if name not in _instances:
        if factory is None:
            mod, _, cls = _FACTORIES[name].partition(":")
            factory = getattr(importlib.import_module(mod), cls)
        _instances[name] = factory()
    return _instances[name]


def reset_providers() -> None:
    _instances.clear()
