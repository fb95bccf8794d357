"""ADAPTER, to be deleted in wave 2: the one place the Docker provider reaches
above its layer.

Today's executor (engine/execute.py) calls `create_agent(desired, agent)`
without extras and `destroy_agent` expecting the grant credential and hosts
file to go with the container. Until it calls `engine.agentsetup.agent_extras`
and `forget_agent` itself (as plan actions), the provider's composite path asks
the engine for them here. Nothing else in providers/ imports above `net`.
"""

from __future__ import annotations

from reconciler.core.model import Desired, DesiredAgent
from reconciler.providers.base import AgentExtras


def agent_extras(desired: Desired, agent: DesiredAgent) -> AgentExtras:
    from reconciler.engine.agentsetup import agent_extras as engine_extras  # layer exception, see above

    return engine_extras(desired, agent)


def forget_agent(fleet: str, agent: str) -> None:
    from reconciler.engine.agentsetup import forget_agent as engine_forget  # layer exception, see above

    engine_forget(fleet, agent)
