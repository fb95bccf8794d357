"""The data that crosses pipeline stages: the resolved desired state and the observed state.

`load` produces a `Desired`, providers' `observe` produce `ObservedHost`/`ObservedAgent`
records gathered into an `Observed`, and `reconcile` turns the pair into a `Plan`
(see `plan.py`). Every model here is frozen at every depth (mappings are
`FrozenDict`, sequences tuples; see `frozen.py`): a stage never edits what it was given.

"spec" means one thing in the code: the record of a resource whose change
replaces it. `DesiredHost.spec()` / `DesiredAgent.spec()` build it, `spec_hash`
is its canonical sha256, providers stamp both on what they create (labels
`dev.fleet.spec`, `dev.fleet.spec-hash`) and read them back as
`ObservedHost.spec` / `ObservedAgent.spec`. What fleet.yaml says is the
"fleet file" (its schema: `load/schema.py`); a `DesiredAgent` is "the desired agent".
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import urlsplit
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from reconciler.core.frozen import FrozenDict, FrozenMap, thaw

Provider = Literal["docker", "modal"]
Restart = Literal["always", "on-failure", "never"]
# The one tunnelled port of every Modal host: its port router (providers/modal_router.py)
MODAL_ROUTER_PORT = 7999
MODAL_RELAY_PORT = 3128  # the grants relay's listener inside a Modal host (the agents' HTTPS_PROXY)


def provider_key(provider: str, engine: str | None) -> str:
    """Which provider instance a resource lives on: "docker" (the local engine from the
    environment), "modal", or "docker@ENGINE" for a host or agent with `engine:`
    (ENGINE as written in fleet.yaml). Actions carry it as `provider`, usage.py
    records it, and `get_provider(key)` returns the provider connected there."""
    return provider if engine is None else f"{provider}@{engine}"


def split_key(key: str) -> tuple[str, str | None]:
    """The inverse of `provider_key`: ("docker", "ssh://dev@box") from "docker@ssh://dev@box"."""
    provider, sep, engine = key.partition("@")
    return provider, (engine if sep else None)


class Frozen(BaseModel):
    """Immutable at every depth: fields cannot be set, and mappings and lists
    inside are `FrozenDict`/tuples (frozen.py), so no stage edits what it was given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied, validated like a new record (pydantic's
        own `model_copy` would store the given values unchecked and unfrozen)."""
        if not update:
            return super().model_copy(deep=deep)
        return self.model_validate({**{k: getattr(self, k) for k in type(self).model_fields}, **update})


class OnEngine(Frozen):
    """A record with an `engine` field: dumped without it when it is None (the
    local engine), so plans, route tables and fingerprints of fleets without
    `engine:` keep the shape they had before engines existed."""

    @model_serializer(mode="wrap")
    def _drop_local_engine(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and "engine" in data and data["engine"] is None:
            del data["engine"]
        return data


def json_key(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON form of `data` (sorted keys, no spaces)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ImageBuild(Frozen):
    """A Dockerfile build; `context_hash` covers every file of the context."""

    context: Path
    dockerfile: str = "Dockerfile"
    args: FrozenMap[str, str] = Field(default_factory=FrozenDict)
    context_hash: str


class ImageRef(Frozen):
    """The image an agent or host runs: `ref` is what the provider starts.

    For a build, `ref` is a tag derived from the build's hash, so a changed
    Dockerfile or context file changes `ref` and so the spec hash.
    """

    ref: str
    build: ImageBuild | None = None


class ModalOptions(Frozen):
    app: str | None = None
    environment: str | None = None
    timeout: int = 86400
    idle_timeout: int | None = None
    cpu: float | None = None
    memory: int | None = None
    region: str | None = None
    restore: Literal["latest"] | None = None


class Workspace(Frozen):
    """A host directory mounted at /workspace. `mode` decides what is mounted."""

    path: Path
    mode: Literal["shared", "copy", "worktree"] = "shared"
    branch: str | None = None
    # files inside `path` mounted read-only at their place (POSIX, relative):
    # the fleet file when it lies in a shared workspace, so an agent cannot
    # grant itself more. Relative, so the same layout hashes the same anywhere.
    read_only: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """As it enters a spec hash; `read_only` is added by the owner only
        when there is one, so workspaces without it keep their earlier hash."""
        return self.model_dump(mode="json", exclude={"read_only"})


class DesiredHost(OnEngine):
    """A host declared under `hosts:` (a shared host). Private hosts have no record:
    a private agent is its own host."""

    name: str
    provider: Provider = "docker"
    image: ImageRef
    workspace: Workspace | None = None
    env: FrozenMap[str, str] = Field(default_factory=FrozenDict)
    ports: tuple[int, ...] = ()  # union of its agents' container ports, sorted
    modal: ModalOptions | None = None
    # the Docker engine it runs on (`engine:`, as written); None: the local one
    engine: str | None = None

    @property
    def key(self) -> str:
        """The provider instance it lives on (`provider_key`)."""
        return provider_key(self.provider, self.engine)

    def spec(self) -> dict[str, Any]:
        """What, when changed, means the host must be replaced.

        Env is not here: it is merged into each agent's spec, so an env edit
        replaces agents, never the holder. Nor, on Docker, are its agents'
        ports: the holder publishes none (the routing proxy reaches agents at the
        holder's address on the bridge), so an agent joining or leaving with a
        port never replaces it. Nor on Modal, where tunnels are fixed when a
        sandbox is created: every sandbox has one tunnel, to a port router
        inside it (`router`, new in the spec, so a sandbox made with one tunnel
        per port is replaced once). (`ports` stays in the spec as `[]`: holders
        made before this change that published nothing keep their hash.)
        """
        data: dict[str, Any] = {
            "provider": self.provider,
            "image": self.image.ref,
            "workspace": self.workspace.spec() if self.workspace else None,
            "ports": [],
        }
        if self.provider == "modal":
            data["router"] = MODAL_ROUTER_PORT
        if self.modal is not None:
            data["modal"] = self.modal.model_dump(mode="json", exclude_none=True)
        if self.workspace is not None and self.workspace.read_only:
            data["read_only"] = list(self.workspace.read_only)
        if self.engine is not None:  # only when set: hosts on the local engine keep their hash
            data["engine"] = self.engine
        return data

    @property
    def spec_hash(self) -> str:
        return canonical_hash(self.spec())


class DesiredAgent(OnEngine):
    """A fully resolved agent: defaults, host and agent settings merged."""

    name: str
    host: str | None = None  # None: a private host (the agent's own container)
    provider: Provider = "docker"
    image: ImageRef
    workspace: Workspace | None = None  # private hosts only
    command: tuple[str, ...] | None = None
    message: str | None = None
    env: FrozenMap[str, str] = Field(default_factory=FrozenDict)  # user env, merged
    ports: FrozenMap[str, int] = Field(default_factory=FrozenDict)  # service -> container port
    grants: tuple[str, ...] = ()
    # definitions of the user-defined grants among `grants` (hosts, header, value
    # template; never a secret), so editing one shows in a diff and replaces its agents
    grant_defs: FrozenMap[str, Mapping[str, Any]] = Field(default_factory=FrozenDict)
    restart: Restart = "always"
    enabled: bool = True
    # Linux capabilities given back to this agent's container (fleet drops NET_RAW
    # and sets no-new-privileges for every container); sorted, no duplicates
    capabilities: tuple[str, ...] = ()
    # the Docker engine its container runs on: its shared host's, or its own
    # `engine:` (private hosts); None: the local one
    engine: str | None = None

    @property
    def key(self) -> str:
        """The provider instance it lives on (`provider_key`)."""
        return provider_key(self.provider, self.engine)

    @property
    def host_name(self) -> str:
        """The value of FLEET_HOST: the shared host, or the agent itself."""
        return self.host or self.name

    def spec(self) -> dict[str, Any]:
        """The keys whose change replaces the agent. `message` and `enabled` are
        not among them: a new first message does not restart a running agent, and
        disabling stops it without replacing it."""
        data = {
            "host": self.host,
            "provider": self.provider,
            "image": self.image.ref,
            "workspace": self.workspace.spec() if self.workspace else None,
            "command": list(self.command) if self.command is not None else None,
            "env": dict(self.env),
            "ports": dict(self.ports),
            "grants": sorted(self.grants),  # order is not a change
            "restart": self.restart,
        }
        if self.grant_defs:  # only when there are any: other agents' hashes stay as they were
            data["grant_defs"] = {k: thaw(self.grant_defs[k]) for k in sorted(self.grant_defs)}
        if self.capabilities:  # likewise: agents without any keep their hash
            data["capabilities"] = sorted(self.capabilities)
        if self.workspace is not None and self.workspace.read_only:
            data["read_only"] = list(self.workspace.read_only)
        if self.engine is not None:  # only when set: agents on the local engine keep their hash
            data["engine"] = self.engine
        return data

    @property
    def spec_hash(self) -> str:
        return canonical_hash(self.spec())


class ProxySettings(Frozen):
    port: int = 8080
    bind: str = "127.0.0.1"
    tls: bool = True


class Desired(Frozen):
    """The whole fleet as `fleet.yaml` asks for it, resolved and validated."""

    fleet: str
    file: Path
    hosts: FrozenMap[str, DesiredHost] = Field(default_factory=FrozenDict)
    agents: FrozenMap[str, DesiredAgent] = Field(default_factory=FrozenDict)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    grants: FrozenMap[str, Any] = Field(default_factory=FrozenDict)  # user-defined grant catalogue

    def agents_on(self, host: str) -> list[DesiredAgent]:
        return [a for a in self.agents.values() if a.host == host]

    @property
    def spec_hash(self) -> str:
        return canonical_hash(
            {
                "fleet": self.fleet,
                "hosts": {n: h.spec() for n, h in sorted(self.hosts.items())},
                "agents": {n: a.spec() for n, a in sorted(self.agents.items())},
            }
        )


State = Literal["created", "running", "restarting", "paused", "exited", "dead", "removing", "unknown"]


class ObservedHost(OnEngine):
    """A shared host found by a provider (a holder container, a Modal sandbox)."""

    name: str
    provider: Provider
    id: str
    state: State
    spec_hash: str
    spec: FrozenMap[str, Any] = Field(default_factory=FrozenDict)
    ports: FrozenMap[int, int] = Field(default_factory=FrozenDict)  # container port -> host port
    urls: FrozenMap[int, str] = Field(default_factory=FrozenDict)  # container port -> tunnel URL (modal)
    address: str | None = None  # docker: the holder's IP on its bridge network (routes go there)
    created: str | None = None
    # agent name -> spec hash, for providers that record agents on the host (modal)
    agents: FrozenMap[str, str] = Field(default_factory=FrozenDict)
    # set when an older fleet version created it under this (ambiguous) name: replaced
    legacy_name: str | None = None
    engine: str | None = None  # the engine it was observed on (`engine:`); None: the local one

    @property
    def key(self) -> str:
        return provider_key(self.provider, self.engine)


class ObservedAgent(OnEngine):
    """An agent found by a provider, from the labels or tags it stamped itself."""

    name: str
    host: str | None
    provider: Provider
    id: str
    state: State
    exit_code: int | None = None
    spec_hash: str
    spec: FrozenMap[str, Any] = Field(default_factory=FrozenDict)
    ports: FrozenMap[int, int] = Field(default_factory=FrozenDict)  # container port -> host port
    address: str | None = None  # docker: the container's IP on its bridge network (none when joined to a holder)
    created: str | None = None
    status: str = ""  # the provider's own one-line status ("Up 3 minutes")
    # the shared host's resource this agent is joined to (docker: holder container id,
    # modal: sandbox id); reconcile replaces an agent joined to a host that is gone
    host_id: str | None = None
    message_pending: bool = False
    # `fleet stop` stopped this very container when fleet.yaml's spec of the
    # agent had this hash (stops.py); None: not stopped by a person
    stop_spec_hash: str | None = None
    # set when an older fleet version created it under this (ambiguous) name: replaced
    legacy_name: str | None = None
    engine: str | None = None  # the engine it was observed on (`engine:`); None: the local one

    @property
    def key(self) -> str:
        return provider_key(self.provider, self.engine)


class Route(OnEngine):
    """One agent port reachable through the proxy."""

    agent: str
    service: str
    container_port: int
    target: str  # http://127.0.0.1:49153, or an https tunnel URL
    tls: bool = True
    # set when `target` is a Modal host's port router: the port inside the host,
    # sent as the X-Fleet-Port request header (the router strips it)
    inner_port: int | None = Field(default=None, ge=1, le=65535)
    # set when the agent runs on a remote Docker engine (`engine:`): `target` is an
    # address on that engine's network, reached through the SSH connection the
    # proxy daemon keeps to it
    engine: str | None = None

    @field_validator("target")
    @classmethod
    def _target_is_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"target must be an http:// or https:// URL (found {v!r})")
        return v

    def hostname(self) -> str:
        return f"{self.service}.{self.agent}.localhost"


class Observed(Frozen):
    """What exists and belongs to one fleet, across providers."""

    fleet: str
    hosts: tuple[ObservedHost, ...] = ()
    agents: tuple[ObservedAgent, ...] = ()
    # this fleet's entry in the routing proxy's table, as plain route dicts
    # ({agent, service, container_port, target, tls}); None: no entry at all
    routes: tuple[Route, ...] | None = None
    proxy_running: bool = True  # the routing proxy answers for these routes (False after a reboot)
    # images fleet built for this fleet (docker: label dev.fleet.project, kind image):
    # their tags, or the id of one left without a tag
    images: tuple[str, ...] = ()
    # host name -> its newest snapshot id (providers with "snapshots"): `restore:
    # latest` is resolved from it when planning. Not in the fingerprint: a saved
    # plan names the snapshot it restores, so a newer one does not make it stale
    snapshots: Mapping[str, str] = Field(default_factory=dict)
    # the fleet's workspace volumes (providers with "volumes"), for `fleet destroy --purge-workspaces`
    volumes: tuple[str, ...] = ()
    # owners of the fleet's workspace copies and worktrees under $FLEET_HOME, also
    # only for `fleet destroy --purge-workspaces` (not in the fingerprint either)
    workspace_copies: tuple[str, ...] = ()
    # what observation saw but will not act on, for the user (e.g. a copy carrying fleet's labels)
    warnings: tuple[str, ...] = ()
    # the fleet's agents that hold a grant-proxy credential ($FLEET_HOME/grants/agents.json)
    credentials: tuple[str, ...] = ()
    # the agents' shared network (docker: fleet_agents) exists (True when not observed)
    network: bool = True
    # Modal hosts whose grants relay runs on this machine ($FLEET_HOME/relays/<fleet>/)
    relays: tuple[str, ...] = ()
    # engines that could not be observed (engine -> why): what runs there is
    # unknown, so reconcile plans nothing that creates or removes anything there
    unreachable: FrozenMap[str, str] = Field(default_factory=FrozenDict)
    # provider keys of other engines ("docker@ENGINE") where the agents' network is missing
    networks_missing: tuple[str, ...] = ()
    # per remote Docker engine (provider key "docker@ENGINE"; the local engine's are
    # `images` and `volumes`): the fleet's built images there, and its workspace
    # volumes there, observed on every run (a workspace is uploaded to a remote
    # engine only while its volume is missing there)
    engine_images: FrozenMap[str, tuple[str, ...]] = Field(default_factory=FrozenDict)
    engine_volumes: FrozenMap[str, tuple[str, ...]] = Field(default_factory=FrozenDict)

    def fingerprint(self) -> str:
        """Changes whenever anything reconcile looks at changes (saved plans)."""
        return canonical_hash(
            {
                "hosts": sorted((h.name, h.id, h.state, h.spec_hash) for h in self.hosts),
                "agents": sorted(
                    (a.name, a.id, a.state, a.spec_hash, a.host_id or "", a.message_pending, a.stop_spec_hash or "")
                    for a in self.agents
                ),
                "routes": sorted(json_key(r.model_dump()) for r in self.routes) if self.routes is not None else None,
                **({"images": sorted(self.images)} if self.images else {}),
                **({"credentials": sorted(self.credentials)} if self.credentials else {}),
                **({"network": False} if not self.network else {}),
                **({"relays": sorted(self.relays)} if self.relays else {}),
                **({"unreachable": sorted(self.unreachable)} if self.unreachable else {}),
                **({"networks_missing": sorted(self.networks_missing)} if self.networks_missing else {}),
                **({"engine_images": {k: sorted(v) for k, v in self.engine_images.items()}} if self.engine_images else {}),
                **({"engine_volumes": {k: sorted(v) for k, v in self.engine_volumes.items()}} if self.engine_volumes else {}),
            }
        )


# Former names of Workspace and ImageBuild ("spec" now means only what `.spec()`
# returns), kept while load/loader.py still uses them.
WorkspaceSpec = Workspace
BuildSpec = ImageBuild
