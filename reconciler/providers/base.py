"""The provider interface: what reconcile's plan can ask of Docker or Modal.

Observation is one cheap listing per provider; every mutating method does exactly
one thing to one resource and is idempotent where it can be (destroying what is
already gone is not an error). No method decides anything about the fleet.

Beyond the `Provider` protocol every provider implements, a provider declares
what else it can do in `capabilities` (a frozenset of the names below). Callers
check the declaration through the typed accessors at the end of this module
(`images_of(p)`, `archive_of(p)`, ...), never with `getattr`/`hasattr`:

- "images"    (`Images`):    images fleet builds: observe, build, pull, remove (docker)
- "network"   (`Network`):   the shared agents network, created once (docker)
- "volumes"   (`Volumes`):   the named workspace volumes of shared hosts: list, remove (docker)
- "events"    (`Events`):    a stream of changes to the fleet's resources, for the watch loop (docker)
- "archive"   (`Archive`):   a tar stream of a path in an agent (`fleet pull`) (docker, modal)
- "snapshots" (`Snapshots`): filesystem snapshots of hosts: take one, list the newest (modal)
- "inventory" (`Inventory`): every fleet's resources on this provider, for `fleet ls` (docker)

There are no composite methods: the plan snapshots a host (`snapshot_host`)
and then terminates it (`terminate_host`) as two actions; a `build:` image is
built by an action of its own (`build_image`), never inside a create; workspace
copies are prepared by an action and handed over as `AgentExtras.workspace` /
`HostExtras.workspace`; volumes are purged one `remove_volume` per action.
A provider never issues or revokes grant credentials and never creates the
shared network on its own: those are plan actions too.

Layer `providers`: imports only `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Protocol, cast, runtime_checkable

from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, ObservedAgent, ObservedHost, Workspace, split_key
from reconciler.core.outcome import Outcome
from reconciler.state.workspaces import Mounts

if TYPE_CHECKING:
    from reconciler.providers.terminal import AttachEnd

IMAGES = "images"
NETWORK = "network"
VOLUMES = "volumes"
EVENTS = "events"
ARCHIVE = "archive"
SNAPSHOTS = "snapshots"
INVENTORY = "inventory"
CAPABILITIES = frozenset({IMAGES, NETWORK, VOLUMES, EVENTS, ARCHIVE, SNAPSHOTS, INVENTORY})
NO_RESTORE = ""  # create_host(restore=NO_RESTORE): `restore: latest` found no snapshot when planning


@dataclass(frozen=True)
class AgentExtras:
    """What the engine adds to an agent's container, decided outside the provider
    (grant proxy settings, fleet URLs inside the agent): environment, binds
    (host path -> {"bind": container path, "mode": "ro"|"rw"}), and a hook run
    with the new container's id after it is created and before it starts (the
    grant credential is bound to that container). Binds are Docker only."""

    env: Mapping[str, str] = field(default_factory=dict)
    binds: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    on_created: Callable[[str], None] | None = None
    # the workspace copy/worktree a `workspace prepare` action made (private agents);
    # None: the provider works it out itself (shared workspaces, plans saved before)
    workspace: Mounts | None = None


@dataclass(frozen=True)
class HostExtras:
    """What the engine adds to a shared host: the workspace copy/worktree its
    `workspace prepare` action made (None: worked out by the provider, as above)."""

    workspace: Mounts | None = None


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: frozenset[str]

    # observe
    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]: ...
    def observe_warnings(self, fleet: str) -> list[str]:
        """What the last observe of `fleet` saw and left alone (for the user)."""
        ...

    # hosts (shared hosts only: a private agent is its own host)
    # create/start return what they made (id, published ports, address, tunnel
    # URLs, a note: the route action reads them); destroy a note for the user, or None.
    # `restore`: the snapshot id to start from, resolved at plan time (modal);
    # "" (NO_RESTORE): start from the image, the plan found no snapshot;
    # None with `restore: latest` in the spec still resolves it here (old path)
    def create_host(self, desired: Desired, host: DesiredHost, restore: str | None = None,
                    extras: HostExtras | None = None) -> Outcome | None: ...
    def start_host(self, fleet: str, host: ObservedHost) -> Outcome | None: ...
    # the host's resource goes, nothing is saved first (a snapshot is an action of its own)
    def terminate_host(self, fleet: str, host: ObservedHost) -> None: ...

    # agents
    # `extras`: what the engine adds (fleet URLs, grant proxy settings; None: nothing);
    # returns what was created (its id: container id; modal: sandbox:agent:generation)
    def create_agent(self, desired: Desired, agent: DesiredAgent, extras: AgentExtras | None = None) -> Outcome | None: ...
    def start_agent(self, fleet: str, agent: ObservedAgent) -> Outcome | None: ...
    def restart_agent(self, fleet: str, agent: ObservedAgent) -> Outcome | None: ...
    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None: ...
    # the agent's container/process goes (its credential and hosts file: the engine's)
    def remove_agent(self, fleet: str, agent: ObservedAgent) -> None: ...

    # working with running agents
    def send_message(self, fleet: str, agent: DesiredAgent, text: str) -> str: ...
    def send_input(self, fleet: str, agent: ObservedAgent, data: bytes) -> None: ...
    def logs(self, fleet: str, agent: ObservedAgent, follow: bool = False, tail: int | None = None,
             since: float | None = None) -> Iterator[bytes]: ...
    def exec(self, fleet: str, agent: ObservedAgent, cmd: list[str], workdir: str | None = None,
             env: dict[str, str] | None = None, interactive: bool = False, tty: bool = False) -> int: ...
    def attach(self, fleet: str, agent: ObservedAgent, detach_keys: str, replay: int = 24) -> AttachEnd: ...
    def details(self, fleet: str, agents: list[ObservedAgent]) -> dict[str, dict[str, Any]]: ...


# ---------------------------------------------------------------------- capabilities


class Images(Protocol):
    """"images": the images fleet builds (`build:`), found by label."""

    def observe_images(self, fleet: str) -> tuple[str, ...]:
        """The fleet's built images: tags, or ids of images left untagged."""
        ...

    def build_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Build `image` (it has `build:`) and tag it `image.ref`, labelled as the
        fleet's. Idempotent: an existing `image.ref` is not built again."""
        ...

    def pull_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Pull `image.ref` unless it exists locally."""
        ...

    def ensure_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Composite: `image.ref` exists afterwards (built or pulled)."""
        ...

    def remove_image(self, fleet: str, ref: str) -> str | None:
        """Remove one tag; a note when it is kept (still in use), None otherwise."""
        ...


class Network(Protocol):
    """"network": the shared network agents and holders join (inter-container traffic off)."""

    def observe_network(self) -> bool:
        """Whether the network exists (observation: reconcile plans `network create`)."""
        ...

    def ensure_network(self) -> str:
        """The network's id, created when missing (idempotent; the `network create` action)."""
        ...


class Volumes(Protocol):
    """"volumes": named workspace volumes of shared hosts without a workspace directory."""

    def observe_volumes(self, fleet: str) -> tuple[str, ...]:
        """The fleet's workspace volumes (by label and exact name)."""
        ...

    def remove_volume(self, fleet: str, name: str) -> bool:
        """Remove one of the fleet's volumes; False when it was gone already.
        Refuses a volume that is not the fleet's."""
        ...

    def partial_volumes(self, fleet: str) -> tuple[str, ...]:
        """The fleet's workspace volumes whose upload was cut off (filled again by the next upload)."""
        ...

    def upload_workspace(self, fleet: str, owner: str, workspace: Workspace, image: ImageRef) -> str:
        """Create `owner`'s workspace volume and copy the workspace directory of
        this machine into it (an engine that cannot bind-mount it: `engine:`),
        with a short-lived helper container of `image`; a note for the user."""
        ...


class EventStream(Protocol):
    def close(self) -> None: ...


class Events(Protocol):
    """"events": changes to the fleet's resources as they happen (the watch loop)."""

    def follow_events(self, fleet: str, on_event: Callable[[str, str], None]) -> EventStream:
        """Follow events in a thread until closed: `on_event(kind, detail)` with
        kind "change" (a resource changed: re-observe) or "engine" (the stream
        was lost or is back)."""
        ...


class Archive(Protocol):
    """"archive": a tar stream of a directory in an agent."""

    def archive(self, fleet: str, agent: ObservedAgent, path: str) -> tuple[Iterable[bytes], str]:
        """(tar chunks, the prefix its members carry: "." or the path's last part)."""
        ...


class Snapshots(Protocol):
    """"snapshots": filesystem snapshots of shared hosts (`restore: latest`)."""

    def snapshot_host(self, fleet: str, host: ObservedHost) -> str | None:
        """Snapshot the host's filesystem and record it locally; its id, or None
        when there is nothing to save (the host is gone or was never set up)."""
        ...

    def observe_snapshots(self, fleet: str) -> dict[str, str]:
        """Host name -> id of its newest recorded snapshot (what `restore:
        latest` starts from), so a plan can name the id it will restore."""
        ...


class Inventory(Protocol):
    """"inventory": resources of every fleet on this provider (`fleet ls`)."""

    def inventory(self) -> list[dict[str, str]]:
        """One row per host/agent: fleet, kind, name, state, provider."""
        ...


def has(provider: Provider, capability: str) -> bool:
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown provider capability {capability!r}")
    return capability in provider.capabilities


def _cap(provider: Provider, capability: str) -> Any:
    return provider if has(provider, capability) else None


def images_of(provider: Provider) -> Images | None:
    return cast("Images | None", _cap(provider, IMAGES))


def network_of(provider: Provider) -> Network | None:
    return cast("Network | None", _cap(provider, NETWORK))


def volumes_of(provider: Provider) -> Volumes | None:
    return cast("Volumes | None", _cap(provider, VOLUMES))


def events_of(provider: Provider) -> Events | None:
    return cast("Events | None", _cap(provider, EVENTS))


def archive_of(provider: Provider) -> Archive | None:
    return cast("Archive | None", _cap(provider, ARCHIVE))


def snapshots_of(provider: Provider) -> Snapshots | None:
    return cast("Snapshots | None", _cap(provider, SNAPSHOTS))


def inventory_of(provider: Provider) -> Inventory | None:
    return cast("Inventory | None", _cap(provider, INVENTORY))


# ---------------------------------------------------------------------- registry


_FACTORIES: dict[str, str] = {
    "docker": "reconciler.providers.docker.driver:DockerProvider",
    "modal": "reconciler.providers.modal.driver:ModalProvider",
}

_instances: dict[str, Provider] = {}


def get_provider(name: str, factory: Callable[[], Provider] | None = None) -> Provider:
    """The provider called `name`, created on first use (lazy import). `name` is a
    provider key (core/model.py `provider_key`): "docker", "modal", or
    "docker@ENGINE", a Docker provider connected to that engine (one connection
    for the life of the process)."""
    if name not in _instances:
        if factory is None:
            provider, engine = split_key(name)
            mod, _, cls = _FACTORIES[provider].partition(":")
            made = getattr(importlib.import_module(mod), cls)
            assert made is not None
            factory = (lambda: made(engine=engine)) if engine is not None else made
        _instances[name] = factory()
    return _instances[name]


def reset_providers() -> None:
    _instances.clear()
