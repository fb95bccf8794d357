"""One handler per action class: the provider calls that carry the action out.

No decisions: the action says what to do and holds every record it needs. A
handler returns an `Outcome` (what it made: ids, ports, addresses, URLs, a note
for the user), which the executor records in the execution state for the
actions after it. Adding an action kind: a class in core/actions.py and a
function here decorated with `@handles(ThatClass)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from reconciler.core.errors import FleetError
from reconciler.core.model import DesiredAgent, ObservedAgent
from reconciler.core.outcome import Outcome, as_outcome
from reconciler.core.plan import (
    Action,
    ActionBase,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    AgentRestart,
    AgentStart,
    AgentStop,
    HostCreate,
    HostDestroy,
    HostReplace,
    HostStart,
    ImageDestroy,
    MessageSend,
    RouteUpdate,
)
from reconciler.core.routes import routes_to_write
from reconciler.engine.effects_hosts import host_extras, restore_of, with_workspace
from reconciler.engine.state import Context
from reconciler.providers.base import images_of

A = TypeVar("A", bound=ActionBase)
Handler = Callable[[Context, Any], Outcome]
HANDLERS: dict[type[ActionBase], Handler] = {}


def handles(*classes: type[A]) -> Callable[[Callable[[Context, A], Outcome]], Callable[[Context, A], Outcome]]:
    def register(fn: Callable[[Context, A], Outcome]) -> Callable[[Context, A], Outcome]:
        for cls in classes:
            assert cls not in HANDLERS, f"two handlers for {cls.__name__}"
            HANDLERS[cls] = fn
        return fn

    return register


def run_action(ctx: Context, action: Action) -> Outcome:
    """Carry out one action through its handler."""
    handler = HANDLERS.get(type(action))
    if handler is None:
        raise FleetError(f"internal: no handler for {type(action).__name__} ({action.kind} {action.op})")
    return handler(ctx, action)


# ---------------------------------------------------------------- hosts


@handles(HostCreate)
def _host_create(ctx: Context, a: HostCreate) -> Outcome:
    return as_outcome(ctx.provider_of(a.provider).create_host(
        ctx.desired, a.desired_host, restore=restore_of(ctx, a), extras=host_extras(ctx, a.name)))


@handles(HostReplace)
def _host_replace(ctx: Context, a: HostReplace) -> Outcome:
    # the snapshot before it goes (Modal) is an action of its own, done before this one
    ctx.provider_of(a.observed_host.key).terminate_host(ctx.fleet, a.observed_host)
    return as_outcome(ctx.provider_of(a.provider).create_host(
        ctx.desired, a.desired_host, restore=restore_of(ctx, a), extras=host_extras(ctx, a.name)))


@handles(HostStart)
def _host_start(ctx: Context, a: HostStart) -> Outcome:
    return as_outcome(ctx.provider_of(a.provider).start_host(ctx.fleet, a.observed_host))


@handles(HostDestroy)
def _host_destroy(ctx: Context, a: HostDestroy) -> Outcome:
    # snapshot (Modal) before and workspace release after are actions of their own
    ctx.provider_of(a.observed_host.key).terminate_host(ctx.fleet, a.observed_host)
    return Outcome()


# ---------------------------------------------------------------- agents


def _made_agent(made: object) -> Outcome:
    """create_agent returns an Outcome (or just the new container's id)."""
    return Outcome(id=made) if isinstance(made, str) else as_outcome(made)


def _create_agent(ctx: Context, agent: DesiredAgent) -> Outcome:
    """The container, with what the engine adds (fleet URLs, the proxy settings
    of the credential this plan issued it: engine/agentsetup.py)."""
    from reconciler.engine.agentsetup import agent_extras

    extras = with_workspace(ctx, agent, agent_extras(ctx, agent))  # plus the copy/worktree a prepare action made
    return _made_agent(ctx.provider_of(agent.key).create_agent(ctx.desired, agent, extras))


def _remove_agent(ctx: Context, agent: ObservedAgent) -> None:
    """The container goes, and its hosts file (its credential: `credentials revoke`)."""
    from reconciler.engine.agentsetup import forget_agent

    ctx.provider_of(agent.key).remove_agent(ctx.fleet, agent)
    forget_agent(ctx.fleet, agent.name)


@handles(AgentCreate)
def _agent_create(ctx: Context, a: AgentCreate) -> Outcome:
    return _create_agent(ctx, a.desired_agent)


@handles(AgentReplace)
def _agent_replace(ctx: Context, a: AgentReplace) -> Outcome:
    _remove_agent(ctx, a.observed_agent)
    return _create_agent(ctx, a.desired_agent)


@handles(AgentStart)
def _agent_start(ctx: Context, a: AgentStart) -> Outcome:
    return as_outcome(ctx.provider_of(a.provider).start_agent(ctx.fleet, a.observed_agent))


@handles(AgentRestart)
def _agent_restart(ctx: Context, a: AgentRestart) -> Outcome:
    return as_outcome(ctx.provider_of(a.provider).restart_agent(ctx.fleet, a.observed_agent))


@handles(AgentStop)
def _agent_stop(ctx: Context, a: AgentStop) -> Outcome:
    ctx.provider_of(a.provider).stop_agent(ctx.fleet, a.observed_agent)
    return Outcome()


@handles(AgentDestroy)
def _agent_destroy(ctx: Context, a: AgentDestroy) -> Outcome:
    _remove_agent(ctx, a.observed_agent)
    return Outcome()  # its workspace: a release action after this one


@handles(MessageSend)
def _message(ctx: Context, a: MessageSend) -> Outcome:
    from reconciler.state import messages

    agent = a.desired_agent
    try:
        cid = ctx.provider_of(a.provider).send_message(ctx.fleet, agent, agent.message or "")
    except FleetError as exc:
        if a.observed_agent is not None:
            messages.record(ctx.fleet, agent.name, a.observed_agent.id, "failed", str(exc))
        raise
    messages.record(ctx.fleet, agent.name, cid, "delivered")
    return Outcome(id=cid)


# ---------------------------------------------------------------- routes, images


@handles(RouteUpdate)
def _routes(ctx: Context, a: RouteUpdate) -> Outcome:
    """The routes are computed from the execution state (the plan's observation
    with the outcomes of the actions done so far), never by observing again."""
    from reconciler.engine import agentnet
    from reconciler.routing import sync

    if a.removes:
        note = sync.remove_routes(ctx.fleet)
        agentnet.forget_fleet(ctx.fleet)
        return Outcome(note=note)
    now = ctx.state.observed()
    if now is None:
        raise FleetError("internal: a route action needs the plan's observation (execute(..., observed=...))")
    routes = routes_to_write(ctx.desired, now)
    if routes is None:
        return Outcome(note=sync.remove_routes(ctx.fleet))
    sync.apply_routes(ctx.fleet, ctx.desired.proxy, routes)
    agentnet.refresh(ctx.desired)  # running agents resolve names added since they started
    return Outcome()


@handles(ImageDestroy)
def _image_destroy(ctx: Context, a: ImageDestroy) -> Outcome:
    images = images_of(ctx.provider_of(a.provider))  # the "images" capability (docker)
    if images is None:
        raise FleetError(f"provider {a.provider} keeps no built images")
    return Outcome(note=images.remove_image(ctx.fleet, a.name))
