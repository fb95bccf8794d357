"""What the engine adds to a Docker agent's container, outside its spec: the
grant proxy settings (a fresh credential, the proxy running, the CA bundle) and
the fleet URLs inside the agent (hosts file, curlrc, routing CA). Providers take
the result as `AgentExtras` and never import grants or the engine themselves.

`agent_extras` has side effects beyond the container (it issues the agent a
credential and revokes the credentials of agents without grants); wave 2 of the
plan work turns them into plan actions. `forget_agent` undoes both when the
agent's container goes.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

from reconciler.core.model import Desired, DesiredAgent
from reconciler.providers.base import AgentExtras


def agent_extras(desired: Desired, agent: DesiredAgent) -> AgentExtras:
    """Environment and binds for `agent`'s container, and the hook that binds its
    grant credential (if any) to the container once it exists."""
    from reconciler.engine.agentnet import container_setup as url_setup
    from reconciler.grants.inject import bind_credential, container_setup

    grant_env, grant_binds = container_setup(desired, agent)  # both empty without grants
    net_env, net_binds = url_setup(desired, agent, bundle=not agent.grants)
    fleet, name = desired.fleet, agent.name

    def bind(container_id: str) -> None:  # the credential works only from this container (grants.peers)
        bind_credential(fleet, name, container_id)

    return AgentExtras(
        env={**net_env, **grant_env},
        binds={**net_binds, **grant_binds},
        on_created=bind if grant_env else None,
    )


def forget_agent(fleet: str, agent: str) -> None:
    """The agent's container is gone: its proxy credential and hosts file go too."""
    from reconciler.engine.agentnet import forget
    from reconciler.grants import agents as grant_agents

    grant_agents.forget(fleet, agent)
    forget(fleet, agent)
