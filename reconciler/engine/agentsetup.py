"""What the engine adds to a Docker agent's container, outside its spec: the
grant proxy settings (from the plan's `credentials issue` action, read from the
execution state) and the fleet URLs inside the agent (hosts file, curlrc,
routing CA). Providers take the result as `AgentExtras` and never import grants
or the engine themselves.

Issuing and revoking credentials are plan actions (core/effects.py,
engine/handlers_grants.py); nothing here issues or revokes one. `forget_agent`
removes the agent's hosts file when its container goes.

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.core.effects import issue_id
from reconciler.core.model import DesiredAgent
from reconciler.engine.state import Context
from reconciler.providers.base import AgentExtras

ENV, BINDS = "env", "binds"  # the keys of a `credentials issue` outcome's values (JSON objects)


def grant_setup(ctx: Context, agent: DesiredAgent) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, binds) the agent's `credentials issue` action produced in
    this plan; both empty when the plan issued it none."""
    issued = ctx.state.outcome(issue_id(agent.name))
    if issued is None or ENV not in issued.values:
        return {}, {}
    return json.loads(issued.values[ENV]), json.loads(issued.values.get(BINDS, "{}"))


def agent_extras(ctx: Context, agent: DesiredAgent) -> AgentExtras | None:
    """Environment and binds for `agent`'s container, and the hook that binds its
    grant credential (if the plan issued one) to the container once it exists.
    On Modal only the grant settings apply (the credential is bound when issued,
    to its host's relay; the provider writes the CA bundle into the sandbox)."""
    if agent.provider == "modal":
        env, binds = grant_setup(ctx, agent)
        return AgentExtras(env=env, binds=binds) if env else None
    if agent.provider != "docker":
        return None
    if agent.engine is not None:  # a remote engine: no bind of this machine's files means anything there
        return _remote_extras(ctx, agent)
    from reconciler.engine.agentnet import container_setup as url_setup
    from reconciler.grants.inject import bind_credential

    grant_env, grant_binds = grant_setup(ctx, agent)
    net_env, net_binds = url_setup(ctx.desired, agent, bundle=not grant_binds)
    fleet, name = ctx.fleet, agent.name

    def bind(container_id: str) -> None:  # the credential works only from this container (grants.peers)
        bind_credential(fleet, name, container_id)

    return AgentExtras(
        env={**net_env, **grant_env},
        binds={**net_binds, **grant_binds},
        on_created=bind if grant_env else None,
    )


def _remote_extras(ctx: Context, agent: DesiredAgent) -> AgentExtras | None:
    """A Docker agent on a remote engine: the grant proxy settings (pointing at
    the reverse forward of the proxy's link to that engine; the credential was
    bound to the engine's loopback source when issued) and the CA bundle copied
    into its container before it starts."""
    grant_env, _ = grant_setup(ctx, agent)
    if not grant_env:
        return None
    from reconciler.engine.remotegrants import copy_bundle

    provider = ctx.provider_of(agent.key)

    def bundle(container_id: str) -> None:
        copy_bundle(provider, container_id)

    return AgentExtras(env=grant_env, on_created=bundle)


def forget_agent(fleet: str, agent: str) -> None:
    """The agent's container is gone: its hosts file goes too (its credential,
    if any, is revoked by the plan's `credentials revoke`)."""
    from reconciler.engine.agentnet import forget

    forget(fleet, agent)
