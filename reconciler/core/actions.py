"""The plan's actions: one precise class per thing the executor can do.

Every action carries its resource (`kind`, `name`), its operation (`op`), a
human `cause`, the ids it waits for (`depends_on`) and exactly the records it
needs: a `HostCreate` has a `DesiredHost`, a `HostDestroy` an `ObservedHost`,
and neither is optional where it is needed. `Action` is the discriminated union
of all of them, told apart by (kind, op), so a saved plan loads back into the
same classes.

The JSON of every action has the same keys, in the same order, whatever its
class (id, op, kind, name, host, provider, cause, changes, depends_on,
desired_host, desired_agent, observed_host, observed_agent, route, image,
workspace, restore): a payload
an action does not carry is declared `None`, so `fleet plan -o FILE` files keep
their shape.

Adding an action kind (wave 2: credentials, workspaces, builds...): add its
`Op`/`Kind` literal values, a class below with its payload fields (narrowing
`op`/`kind` to Literals and each field it carries), list it in `ACTION_TYPES`,
give it an `after` when its success changes what routes see, and register a
handler for it in the engine (`engine/handlers.py`, `@handles(NewAction)`).

Core: stdlib and pydantic only.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Discriminator, Tag, TypeAdapter

from reconciler.core.model import DesiredAgent, DesiredHost, Frozen, ImageRef, ObservedAgent, ObservedHost, WorkspaceSpec
from reconciler.core.outcome import Outcome, World

Op = Literal[
    "create", "join", "restart", "replace", "start", "stop", "destroy", "route", "message",
    "issue", "revoke",  # grant credentials (core/effects.py)
    "build", "snapshot", "prepare", "release", "purge",  # side effects of hosts (core/effects_hosts.py)
    "upload",  # a workspace copied to its volume on a remote Docker engine (core/effects_hosts.py)
]
Kind = Literal["host", "agent", "route", "image", "credentials", "network", "workspace", "volume", "relay"]

# Ops that change or remove something running: apply asks before these on a TTY.
DISRUPTIVE: frozenset[str] = frozenset({"replace", "destroy", "restart", "stop", "purge"})


class Change(Frozen):
    key: str  # dotted key path, e.g. "env.TZ"
    before: Any = None
    after: Any = None


class RouteSpec(Frozen):
    """The payload of a route action: `remove` drops the fleet's routes
    (`fleet destroy`); otherwise the routes are computed when it runs."""

    remove: bool = True


class RestoreSpec(Frozen):
    """The snapshot a Modal host starts from (`restore: latest`, resolved when
    planning): `snapshot`, an id seen at plan time, or `taken_by`, the id of
    this plan's snapshot action of the host it replaces (its result)."""

    snapshot: str | None = None
    taken_by: str | None = None


class ActionBase(Frozen):
    """What every action has. Subclasses narrow `op`/`kind` to Literals and
    declare each payload as its type (required) or `None` (absent)."""

    id: str
    op: Op
    kind: Kind
    name: str
    host: str | None = None
    provider: str = "docker"
    cause: str
    changes: tuple[Change, ...] = ()
    depends_on: tuple[str, ...] = ()
    desired_host: DesiredHost | None = None
    desired_agent: DesiredAgent | None = None
    observed_host: ObservedHost | None = None
    observed_agent: ObservedAgent | None = None
    route: RouteSpec | None = None
    # payloads of the host side effects (core/effects_hosts.py)
    image: ImageRef | None = None  # image build
    workspace: WorkspaceSpec | None = None  # workspace prepare/release
    restore: RestoreSpec | None = None  # host create/replace: the snapshot to start from

    # the ops this class stands for (from its `op` Literal), filled in by _register
    OPS: ClassVar[tuple[str, ...]] = ()
    # side effects beside the resources (credentials, the network): how the plan's
    # summary counts them, e.g. ("credential", "to issue"); None: counted by op
    SUMMARY: ClassVar[tuple[str, str] | None] = None

    @property
    def disruptive(self) -> bool:
        # removing an unused built image stops nothing
        return self.op in DISRUPTIVE and self.kind not in ("image", "relay")  # nor stopping a relay

    @property
    def gone(self) -> str | None:
        """The id of the observed resource this action removes (destroy, replace), if any."""
        return None

    def after(self, world: World, outcome: Outcome) -> None:
        """How the world observation saw changes once this action succeeded
        (the execution state; the route action reads it). Default: not at all."""


# ---------------------------------------------------------------- hosts


class HostCreate(ActionBase):
    op: Literal["create"] = "create"
    kind: Literal["host"] = "host"
    desired_host: DesiredHost
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None

    def after(self, world: World, outcome: Outcome) -> None:
        world.put_host(world.made_host(self.desired_host, outcome))


class HostReplace(ActionBase):
    op: Literal["replace"] = "replace"
    kind: Literal["host"] = "host"
    desired_host: DesiredHost
    desired_agent: None = None
    observed_host: ObservedHost
    observed_agent: None = None
    route: None = None

    @property
    def gone(self) -> str | None:
        return self.observed_host.id

    def after(self, world: World, outcome: Outcome) -> None:
        world.drop(self.observed_host.id)
        world.put_host(world.made_host(self.desired_host, outcome))


class HostStart(ActionBase):
    op: Literal["start"] = "start"
    kind: Literal["host"] = "host"
    desired_host: DesiredHost | None = None  # `fleet start` of a host fleet.yaml may no longer name
    desired_agent: None = None
    observed_host: ObservedHost
    observed_agent: None = None
    route: None = None

    def after(self, world: World, outcome: Outcome) -> None:
        world.put_host(world.started(self.observed_host, outcome))


class HostDestroy(ActionBase):
    op: Literal["destroy"] = "destroy"
    kind: Literal["host"] = "host"
    desired_host: None = None
    desired_agent: None = None
    observed_host: ObservedHost
    observed_agent: None = None
    route: None = None

    @property
    def gone(self) -> str | None:
        return self.observed_host.id

    def after(self, world: World, outcome: Outcome) -> None:
        world.drop(self.observed_host.id)


# ---------------------------------------------------------------- agents


class AgentCreate(ActionBase):
    """A private agent's own container (create), or an agent joining its shared host (join)."""

    op: Literal["create", "join"]
    kind: Literal["agent"] = "agent"
    desired_host: None = None
    desired_agent: DesiredAgent
    observed_host: None = None
    observed_agent: None = None
    route: None = None

    def after(self, world: World, outcome: Outcome) -> None:
        world.put_agent(world.made_agent(self.desired_agent, outcome))


class AgentReplace(ActionBase):
    op: Literal["replace"] = "replace"
    kind: Literal["agent"] = "agent"
    desired_host: None = None
    desired_agent: DesiredAgent
    observed_host: None = None
    observed_agent: ObservedAgent
    route: None = None

    @property
    def gone(self) -> str | None:
        return self.observed_agent.id

    def after(self, world: World, outcome: Outcome) -> None:
        world.drop(self.observed_agent.id)
        world.put_agent(world.made_agent(self.desired_agent, outcome))


class _AgentRunning(ActionBase):
    """start, restart and stop: an existing container, and its spec."""

    kind: Literal["agent"] = "agent"
    desired_host: None = None
    desired_agent: DesiredAgent
    observed_host: None = None
    observed_agent: ObservedAgent
    route: None = None

    def after(self, world: World, outcome: Outcome) -> None:
        world.put_agent(world.started(self.observed_agent, outcome))


class AgentStart(_AgentRunning):
    op: Literal["start"] = "start"


class AgentRestart(_AgentRunning):
    op: Literal["restart"] = "restart"


class AgentStop(_AgentRunning):
    op: Literal["stop"] = "stop"

    def after(self, world: World, outcome: Outcome) -> None:
        world.put_agent(self.observed_agent.model_copy(update={"state": "exited"}))


class AgentDestroy(ActionBase):
    op: Literal["destroy"] = "destroy"
    kind: Literal["agent"] = "agent"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: ObservedAgent
    route: None = None

    @property
    def gone(self) -> str | None:
        return self.observed_agent.id

    def after(self, world: World, outcome: Outcome) -> None:
        world.drop(self.observed_agent.id)


class MessageSend(ActionBase):
    """Type an agent's first message into it (`observed_agent`: the container
    it was found in when the delivery is a retry)."""

    op: Literal["message"] = "message"
    kind: Literal["agent"] = "agent"
    desired_host: None = None
    desired_agent: DesiredAgent
    observed_host: None = None
    observed_agent: ObservedAgent | None = None
    route: None = None


# ---------------------------------------------------------------- routes, images


class RouteUpdate(ActionBase):
    """Bring the fleet's entry in the route table in line with what runs once
    the actions it waits for are done (computed from the execution state), or
    drop it (`route.remove`)."""

    id: str = "route:routes"
    op: Literal["route"] = "route"
    kind: Literal["route"] = "route"
    name: str = "routes"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: RouteSpec | None = None

    @property
    def removes(self) -> bool:
        return self.route is not None and self.route.remove


class ImageDestroy(ActionBase):
    """Remove an image fleet built for this fleet (by tag or id in `name`)."""

    op: Literal["destroy"] = "destroy"
    kind: Literal["image"] = "image"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None


# ---------------------------------------------------------------- side effects: grant credentials, the network


class CredentialIssue(ActionBase):
    """Issue an agent a fresh grant-proxy credential (and make sure the forward
    proxy runs) before its container is created: the create waits for it and
    puts the proxy settings in the container. `name` is the agent's."""

    op: Literal["issue"] = "issue"
    kind: Literal["credentials"] = "credentials"
    desired_host: None = None
    desired_agent: DesiredAgent
    observed_host: None = None
    observed_agent: None = None
    route: None = None
    SUMMARY: ClassVar[tuple[str, str] | None] = ("credential", "to issue")


class CredentialRevoke(ActionBase):
    """Revoke the grant-proxy credential an agent holds (it goes, or has no
    grants any more). `name` is the agent's."""

    op: Literal["revoke"] = "revoke"
    kind: Literal["credentials"] = "credentials"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None
    SUMMARY: ClassVar[tuple[str, str] | None] = ("credential", "to revoke")


class NetworkCreate(ActionBase):
    """Create the agents' shared network (Docker `fleet_agents`, inter-container
    traffic off), which containers are created on. `name` is the network's."""

    op: Literal["create"] = "create"
    kind: Literal["network"] = "network"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None
    SUMMARY: ClassVar[tuple[str, str] | None] = ("network", "to create")


class RelayStart(ActionBase):
    """(Re)start the grants relay of a Modal host on this machine: its agents'
    connections to the forward proxy come back through it. `name`: the host's."""

    op: Literal["start"] = "start"
    kind: Literal["relay"] = "relay"
    desired_host: DesiredHost
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None
    SUMMARY: ClassVar[tuple[str, str] | None] = ("relay", "to start")


class RelayStop(ActionBase):
    """Stop the grants relay of a Modal host (gone, or no agent on it has grants)."""

    op: Literal["stop"] = "stop"
    kind: Literal["relay"] = "relay"
    desired_host: None = None
    desired_agent: None = None
    observed_host: None = None
    observed_agent: None = None
    route: None = None
    SUMMARY: ClassVar[tuple[str, str] | None] = ("relay", "to stop")


# ---------------------------------------------------------------- host side effects (core/effects_hosts.py)


class ImageBuild(ActionBase):
    """Build a `build:` image missing on the engine (`name`: its tag)."""

    op: Literal["build"] = "build"
    kind: Literal["image"] = "image"
    image: ImageRef


class HostSnapshot(ActionBase):
    """Save a Modal host's filesystem before it is terminated (destroy, replace)."""

    op: Literal["snapshot"] = "snapshot"
    kind: Literal["host"] = "host"
    observed_host: ObservedHost


class WorkspacePrepare(ActionBase):
    """Make the copy or worktree of an agent's or host's workspace (`name`: its owner)."""

    op: Literal["prepare"] = "prepare"
    kind: Literal["workspace"] = "workspace"
    workspace: WorkspaceSpec


class WorkspaceUpload(ActionBase):
    """Copy a workspace directory into its named volume on a remote Docker engine
    (`name`: its owner, a shared host or a private agent; the volume is
    `labels.workspace_volume(fleet, name)`), made by this action: planned only
    when that volume does not exist there yet, so agents' work is never
    overwritten. `image`: the owner's image (the short-lived helper container's)."""

    op: Literal["upload"] = "upload"
    kind: Literal["workspace"] = "workspace"
    workspace: WorkspaceSpec
    image: ImageRef
    SUMMARY: ClassVar[tuple[str, str] | None] = ("workspace", "to upload")


class WorkspaceRelease(ActionBase):
    """Remove a destroyed owner's copy or worktree, unless it holds unsaved work."""

    op: Literal["release"] = "release"
    kind: Literal["workspace"] = "workspace"
    workspace: WorkspaceSpec


class WorkspacePurge(ActionBase):
    """Remove a fleet's workspace copy or worktree even if it holds unsaved work
    (`fleet destroy --purge-workspaces`; `name`: its owner)."""

    op: Literal["purge"] = "purge"
    kind: Literal["workspace"] = "workspace"
    SUMMARY: ClassVar[tuple[str, str] | None] = ("workspace", "to purge")


class VolumePurge(ActionBase):
    """Remove one of the fleet's workspace volumes (`fleet destroy --purge-workspaces`)."""

    op: Literal["purge"] = "purge"
    kind: Literal["volume"] = "volume"


# ---------------------------------------------------------------- the union

ACTION_TYPES: tuple[type[ActionBase], ...] = (
    HostCreate, HostReplace, HostStart, HostDestroy,
    AgentCreate, AgentReplace, AgentStart, AgentRestart, AgentStop, AgentDestroy,
    MessageSend, RouteUpdate, ImageDestroy,
    CredentialIssue, CredentialRevoke, NetworkCreate, RelayStart, RelayStop,
    ImageBuild, HostSnapshot, WorkspacePrepare, WorkspaceRelease, WorkspacePurge, VolumePurge, WorkspaceUpload,
)


def _literal(cls: type[ActionBase], field: str) -> tuple[str, ...]:
    return tuple(typing.get_args(cls.model_fields[field].annotation))


_BY_TAG: dict[str, type[ActionBase]] = {}
for _cls in ACTION_TYPES:
    _cls.OPS = _literal(_cls, "op")
    for _kind in _literal(_cls, "kind"):
        for _op in _cls.OPS:
            _tag = f"{_kind}:{_op}"
            assert _tag not in _BY_TAG, f"two action classes for {_tag}"
            _BY_TAG[_tag] = _cls


def _tag_of(value: Any) -> str | None:
    """(kind, op) -> the class's name: the discriminator of `Action`."""
    if isinstance(value, dict):
        kind, op = value.get("kind"), value.get("op")
    else:
        kind, op = getattr(value, "kind", None), getattr(value, "op", None)
    cls = _BY_TAG.get(f"{kind}:{op}")
    return cls.__name__ if cls is not None else None


if typing.TYPE_CHECKING:  # what mypy sees: the same union, spelled out
    Action = Union[
        HostCreate, HostReplace, HostStart, HostDestroy,
        AgentCreate, AgentReplace, AgentStart, AgentRestart, AgentStop, AgentDestroy,
        MessageSend, RouteUpdate, ImageDestroy,
        CredentialIssue, CredentialRevoke, NetworkCreate, RelayStart, RelayStop,
        ImageBuild, HostSnapshot, WorkspacePrepare, WorkspaceRelease, WorkspacePurge, VolumePurge, WorkspaceUpload,
    ]
else:
    Action = Annotated[
        Union[tuple(Annotated[c, Tag(c.__name__)] for c in ACTION_TYPES)],
        Discriminator(_tag_of, custom_error_type="action", custom_error_message="unknown action kind and op"),
    ]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Action)


def parse_action(data: dict[str, Any]) -> ActionBase:
    """An action from its JSON form (or keyword arguments), as its precise class."""
    return _ADAPTER.validate_python(data)  # type: ignore[no-any-return]
