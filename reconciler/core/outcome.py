"""What actions produce, and the world as it stands while a plan runs.

A provider call returns an `Outcome`: the id of what it made, its state, the
ports it published, its bridge address, its tunnel URLs, a note for the user.
The executor keeps them in its execution state (as docker compose does), and
later actions read them: the route action computes the routes from the
plan-time `Observed` with every finished action's outcome applied (`World`),
so nothing is observed again in the middle of a plan.

How one action changes the world is the action's own `after` method
(core/actions.py); `World` only holds the records. Pure: no I/O.
"""

from __future__ import annotations

from typing import TypeVar, Union

from pydantic import Field

from reconciler.core.model import DesiredAgent, DesiredHost, Frozen, Observed, ObservedAgent, ObservedHost, State

Record = Union[ObservedHost, ObservedAgent]
R = TypeVar("R", ObservedHost, ObservedAgent)


class Outcome(Frozen):
    """What one action produced. Every field is optional: a provider reports
    what it knows, the rest is derived from the plan."""

    note: str | None = None  # for the user (a snapshot taken, a workspace kept)
    id: str | None = None  # the container, sandbox or process made or started
    state: State | None = None  # its state right after (default: running)
    ports: dict[int, int] = Field(default_factory=dict)  # container port -> published host port
    address: str | None = None  # its address on the bridge network
    urls: dict[int, str] = Field(default_factory=dict)  # container port -> tunnel URL
    # anything else a later action reads (wave 2: a credential id, a snapshot id)
    values: dict[str, str] = Field(default_factory=dict)


def as_outcome(value: object) -> Outcome:
    """A provider's return value as an Outcome: an Outcome, a note, or nothing."""
    if isinstance(value, Outcome):
        return value
    return Outcome(note=value if isinstance(value, str) and value else None)


class World:
    """The observed records as they stand now: the plan-time `Observed` with
    the `after` of each finished action applied. Records keep their order;
    one put again goes last (so a new holder wins over a duplicate)."""

    def __init__(self, observed: Observed):
        self.base = observed
        self.hosts: dict[str, ObservedHost] = {h.id: h for h in observed.hosts}
        self.agents: dict[str, ObservedAgent] = {a.id: a for a in observed.agents}

    def drop(self, record_id: str) -> None:
        self.hosts.pop(record_id, None)
        self.agents.pop(record_id, None)

    def put_host(self, record: ObservedHost) -> None:
        self.hosts.pop(record.id, None)
        self.hosts[record.id] = record

    def put_agent(self, record: ObservedAgent) -> None:
        self.agents.pop(record.id, None)
        self.agents[record.id] = record

    def host_named(self, name: str) -> ObservedHost | None:
        found = [h for h in self.hosts.values() if h.name == name]
        return found[-1] if found else None

    def made_host(self, host: DesiredHost, outcome: Outcome) -> ObservedHost:
        return ObservedHost(
            name=host.name, provider=host.provider, id=outcome.id or f"new-host:{host.name}",
            state=outcome.state or "running", spec_hash=host.spec_hash, spec=host.spec(),
            ports=dict(outcome.ports), urls=dict(outcome.urls), address=outcome.address, engine=host.engine,
        )

    def made_agent(self, agent: DesiredAgent, outcome: Outcome) -> ObservedAgent:
        holder = self.host_named(agent.host) if agent.host else None
        return ObservedAgent(
            name=agent.name, host=agent.host, provider=agent.provider, id=outcome.id or f"new-agent:{agent.name}",
            state=outcome.state or "running", spec_hash=agent.spec_hash, spec=agent.spec(),
            ports=dict(outcome.ports), address=outcome.address, host_id=holder.id if holder else None,
            engine=agent.engine,
        )

    def started(self, record: R, outcome: Outcome) -> R:
        """`record` (re)started: running (or what the provider saw), with the
        ports, address and URLs it has now when the provider reported them."""
        update: dict[str, object] = {"state": outcome.state or "running"}
        if outcome.ports:
            update["ports"] = dict(outcome.ports)
        if outcome.address:
            update["address"] = outcome.address
        if outcome.urls and isinstance(record, ObservedHost):
            update["urls"] = dict(outcome.urls)
        return record.model_copy(update=update)

    def observed(self) -> Observed:
        return self.base.model_copy(update={"hosts": tuple(self.hosts.values()), "agents": tuple(self.agents.values())})
