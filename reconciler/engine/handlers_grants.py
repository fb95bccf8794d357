"""Handlers of the side-effect actions of core/effects.py: grant credentials
issued and revoked, the agents' network created. Registered with `@handles`
(engine/handlers.py) when engine/execute.py imports this module.

No decisions: the plan says which agent gets a credential and which loses it.
Issuing one is engine work across two layers: the proxy process (`routing`)
must run and its forward proxy (`grants`) listen before the agent's container
can use it. The issue's outcome carries the container's proxy environment and
binds (`values`), which the agent's create reads (engine/agentsetup.py).

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

import json
import time

from reconciler.core.errors import FleetError
from reconciler.core.outcome import Outcome
from reconciler.core.plan import CredentialIssue, CredentialRevoke, NetworkCreate
from reconciler.engine.agentsetup import BINDS, ENV
from reconciler.engine.handlers import handles
from reconciler.engine.state import Context
from reconciler.providers.base import network_of

READY_TIMEOUT = 15.0


def ensure_forward(timeout: float = READY_TIMEOUT) -> int:
    """Make sure the fleet proxy process runs and its forward proxy listens;
    returns the port containers reach it on."""
    from reconciler.grants.inject import forward_port, serves_grants
    from reconciler.routing import daemon

    daemon.ensure_running(need=[], timeout=timeout)  # the process; no routing port needed here
    deadline = time.monotonic() + timeout
    while True:
        pid = daemon.running_pid()
        if pid is None:
            raise FleetError(f"the fleet proxy stopped; see {daemon.log_path()}")
        port = forward_port(pid)
        if port is not None:
            return port
        if time.monotonic() > deadline:
            if not serves_grants(pid):
                raise FleetError(
                    f"the running fleet proxy (pid {pid}) does not serve grants (started by an older fleet?); "
                    "restart it: `fleet proxy stop`, then `fleet apply`"
                )
            raise FleetError(f"the grants proxy did not start listening within {timeout:g}s; see {daemon.log_path()}")
        time.sleep(0.05)


@handles(CredentialIssue)
def _issue(ctx: Context, a: CredentialIssue) -> Outcome:
    """A fresh credential for the agent, the forward proxy running: the proxy
    settings its create puts in the container (in this outcome's values)."""
    from reconciler.grants.inject import container_binds, issue_credential, proxy_env

    agent = a.desired_agent
    credential = issue_credential(ctx.desired, agent)
    port = ensure_forward()
    if agent.provider == "modal":  # through its host's relay, listening in the sandbox
        from reconciler.grants.inject import bind_credential
        from reconciler.grants.peers import loopback_peer
        from reconciler.state.relays import SANDBOX_PORT, source_for

        bind_credential(ctx.fleet, agent.name, loopback_peer(source_for(ctx.fleet, agent.host or "")))
        env = proxy_env(credential, SANDBOX_PORT, agent.env, proxy_host="127.0.0.1")
    elif agent.engine is not None:  # a remote engine: through the proxy's ssh link's reverse forward
        from reconciler.engine.remotegrants import prepare

        gateway, remote_port = prepare(ctx, agent)
        env = proxy_env(credential, remote_port, agent.env, proxy_host=gateway)
        return Outcome(values={ENV: json.dumps(env), BINDS: "{}"})  # the CA bundle is copied in, not bound
    else:
        env = proxy_env(credential, port, agent.env)
    return Outcome(values={ENV: json.dumps(env), BINDS: json.dumps(container_binds())})


@handles(CredentialRevoke)
def _revoke(ctx: Context, a: CredentialRevoke) -> Outcome:
    from reconciler.grants.inject import revoke

    revoke(ctx.fleet, a.name)
    return Outcome()


@handles(NetworkCreate)
def _network(ctx: Context, a: NetworkCreate) -> Outcome:
    net = network_of(ctx.provider_of(a.provider))  # the "network" capability (docker)
    if net is None:
        raise FleetError(f"provider {a.provider} has no shared network")
    return Outcome(id=net.ensure_network())
