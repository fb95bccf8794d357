"""The Docker provider: private hosts as one container per agent, shared hosts as
the pod pattern (a holder container owning network, ports and /workspace; each
agent its own container joined to it).

The parts: session.py (client, errors, ownership checks), observe.py (one
label-filtered list call), images.py (built images), ops.py (logs, exec,
attach, messages, archives), events.py (the event stream), security.py
(hardening, the shared network, workspace volumes). This module holds the
lifecycle of hosts and agents and declares the capabilities (base.py).

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, Callable

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, ObservedAgent, ObservedHost, Workspace
from reconciler.providers import base
from reconciler.providers.base import AgentExtras, HostExtras
from reconciler.providers.docker import events as docker_events
from reconciler.providers.docker import images as docker_images
from reconciler.providers.docker import made
from reconciler.providers.docker import upload as docker_upload
from reconciler.core.outcome import Outcome
from reconciler.providers.docker import observe as docker_observe
from reconciler.providers.docker import security as sec
from reconciler.providers.docker.ops import DockerAgentOps
from reconciler.providers.docker.session import STOP_TIMEOUT
from reconciler.state import workspaces

RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
HOLDER_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]


def _spec_label(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def _workspace_binds(fleet: str, owner: str, workspace: Any, binds: dict[str, Any], env: dict[str, str] | None = None,
                     mounts: workspaces.Mounts | None = None) -> None:
    """Bind a workspace directory at /workspace, with its extras: `mounts`, made
    by the plan's `workspace prepare` action; without them (a shared workspace,
    a plan saved before that action existed) worked out here."""
    if mounts is None:
        mounts = workspaces.prepare(fleet, owner, workspace)
    binds[str(mounts.workspace)] = {"bind": "/workspace", "mode": "rw"}
    for src, dst in mounts.extra.items():
        binds[src] = {"bind": dst, "mode": "rw"}
    for src, dst in mounts.read_only.items():  # the fleet file, git config: never the agent's
        binds[src] = {"bind": dst, "mode": "ro"}
    if env is not None:
        env.update(mounts.env)


class DockerProvider(DockerAgentOps):
    """Realises hosts and agents as Docker containers."""

    name = "docker"
    capabilities = frozenset({base.IMAGES, base.NETWORK, base.VOLUMES, base.EVENTS, base.ARCHIVE, base.INVENTORY})

    def __init__(self, client: Any = None, parallel: int = 8, engine: str | None = None):
        super().__init__(client, parallel, engine)
        self._image_locks: dict[str, threading.Lock] = {}
        self._warnings: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ observe

    def observe(self, fleet: str) -> tuple[list[ObservedHost], list[ObservedAgent]]:
        hosts, agents, warnings = docker_observe.observe(self.api, fleet, self.engine)
        self._warnings[fleet] = warnings
        return hosts, agents

    def observe_warnings(self, fleet: str) -> list[str]:
        """What the last observe of `fleet` saw and left alone (copies carrying its labels)."""
        return list(self._warnings.get(fleet, ()))

    def inventory(self) -> list[dict[str, str]]:
        """Capability "inventory": every fleet's hosts and agents on this engine."""
        return docker_observe.inventory(self.api)

    # ------------------------------------------------------------------ images (capability "images")

    def _image_lock(self, ref: str) -> threading.Lock:
        with self._lock:
            return self._image_locks.setdefault(ref, threading.Lock())

    def build_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Build `image` from its `build:` context unless `image.ref` exists."""
        with self._image_lock(image.ref):
            if not docker_images.exists(self.api, image.ref):
                docker_images.build(self.api, fleet, image, resource)

    def pull_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Pull `image.ref` unless it exists locally."""
        with self._image_lock(image.ref):
            if not docker_images.exists(self.api, image.ref):
                docker_images.pull(self.api, image, resource, self.engine)

    def ensure_image(self, fleet: str, image: ImageRef, resource: str) -> None:
        """Composite: make sure `image.ref` exists locally: build it (build:) or pull it."""
        if image.build is not None:
            self.build_image(fleet, image, resource)
        else:
            self.pull_image(fleet, image, resource)

    def observe_images(self, fleet: str) -> tuple[str, ...]:
        return docker_images.observe_images(self.api, fleet)

    def remove_image(self, fleet: str, ref: str) -> str | None:
        return docker_images.remove_image(self.api, ref)

    # ------------------------------------------------------------------ network (capability "network")

    def observe_network(self) -> bool:
        """Whether the shared agents network (fleet_agents) exists."""
        exists: bool = self._call("network " + L.NETWORK, sec.network_exists, self.api)
        return exists

    def ensure_network(self) -> str:
        """The shared agents network (fleet_agents), created when missing; its id."""
        network: str = self._call("network " + L.NETWORK, sec.ensure_network, self.api)
        return network

    def _network(self) -> str:
        """The shared agents network containers go on (made by the plan's `network create`)."""
        network: str = self._call("network " + L.NETWORK, sec.find_network, self.api)
        return network

    # ------------------------------------------------------------------ events (capability "events")

    def follow_events(self, fleet: str, on_event: Callable[[str, str], None]) -> docker_events.DockerEvents:
        if self.engine is None:
            return docker_events.DockerEvents(fleet, on_event)
        # a remote engine: the stream goes over the provider's one connection (it
        # reconnects ssh when needed); retried less eagerly while the engine is away
        return docker_events.DockerEvents(fleet, on_event, client=lambda: self.client, engine=self.engine, max_delay=5.0)

    # ------------------------------------------------------------------ hosts

    def create_host(self, desired: Desired, host: DesiredHost, restore: str | None = None,
                    extras: HostExtras | None = None) -> Outcome:
        """Create and start the holder container (`restore` does not apply to Docker).
        A `build:` image is built by the plan's `image build` action, never here."""
        fleet = desired.fleet
        resource = f"host {host.name}"
        if host.image.build is None:
            self.pull_image(fleet, host.image, resource)
        name = L.host_container(fleet, host.name)
        binds: dict[str, Any] = {}
        if host.workspace is not None and self.engine is None:
            _workspace_binds(fleet, host.name, host.workspace, binds, mounts=extras.workspace if extras else None)
        else:  # no workspace, or one on a remote engine: uploaded into this volume by the plan
            vol = self._call(resource, sec.workspace_volume, self.api, fleet, host.name, self.engine,
                             uploaded=host.workspace is not None)
            binds[vol] = {"bind": "/workspace", "mode": "rw"}
        network = self._network()
        # No published ports: the proxy reaches its agents at the holder's bridge address,
        # so agents join and leave with ports without replacing it (nor their neighbours).
        hc = self.api.create_host_config(
            binds=binds,
            restart_policy={"Name": "always"},
            extra_hosts={"fleet-proxy": "host-gateway"},
            init=True,
            network_mode=network,
            **sec.hardening(),  # the holder only sleeps; agents' capabilities are their own
        )
        lab = {
            L.PROJECT: fleet, L.KIND: "host", L.HOST: host.name, L.NAMING: L.NAMING_VERSION,
            L.SPEC_HASH: host.spec_hash, L.SPEC: _spec_label(host.spec()),
            **({L.ENGINE: self.engine} if self.engine is not None else {}),
        }
        c = self._call(
            resource, self.api.create_container, image=host.image.ref, command=HOLDER_COMMAND, name=name,
            labels=lab, host_config=hc, volumes=["/workspace"],
            working_dir="/workspace", hostname=host.name,
        )
        self._call(resource, self.api.start, c["Id"])
        return self._call(resource, made.outcome, self.api, c["Id"])  # its address: routes go there

    def start_host(self, fleet: str, host: ObservedHost) -> Outcome:
        self._call(f"host {host.name}", self.api.start, host.id)
        return self._call(f"host {host.name}", made.outcome, self.api, host.id)

    def terminate_host(self, fleet: str, host: ObservedHost) -> None:
        self._remove(f"host {host.name}", host.id, fleet)

    # ------------------------------------------------------------------ agents

    def create_agent(self, desired: Desired, agent: DesiredAgent, extras: AgentExtras | None = None) -> Outcome:
        """Create and start the agent's container; returns its id, state and published
        ports. `extras`: what the engine adds (fleet URLs, grant proxy settings)."""
        fleet = desired.fleet
        resource = f"agent {agent.name}"
        extras = extras if extras is not None else AgentExtras()
        lab = {
            L.PROJECT: fleet, L.KIND: "agent", L.AGENT: agent.name, L.NAMING: L.NAMING_VERSION,
            L.SPEC_HASH: agent.spec_hash, L.SPEC: _spec_label(agent.spec()),
            L.PORTS: json.dumps(agent.ports, sort_keys=True),
            L.MESSAGE: "pending" if agent.message else "none",
            **({L.ENGINE: self.engine} if self.engine is not None else {}),
        }
        env = {**agent.env, **extras.env}
        extra_binds: dict[str, Any] = {src: dict(b) for src, b in extras.binds.items()}
        # capabilities are per container, even for agents sharing a holder's network
        common_hc: dict[str, Any] = dict(restart_policy={"Name": RESTART[agent.restart]}, init=True,
                                         **sec.hardening(agent.capabilities))
        if agent.restart == "on-failure":
            common_hc["restart_policy"]["MaximumRetryCount"] = 0
        kwargs: dict[str, Any] = {}
        if agent.host:
            lab[L.HOST] = agent.host
            holder = L.host_container(fleet, agent.host)
            hc = self.api.create_host_config(
                network_mode=f"container:{holder}", volumes_from=[holder], binds=extra_binds or None, **common_hc
            )
        else:
            if agent.image.build is None:  # a `build:` image is built by the plan's `image build` action
                self.pull_image(fleet, agent.image, resource)
            binds = dict(extra_binds)
            if agent.workspace is not None and self.engine is not None:  # its own volume there, uploaded by the plan
                vol = self._call(resource, sec.workspace_volume, self.api, fleet, agent.name, self.engine,
                                 uploaded=True, who=resource)
                binds[vol] = {"bind": "/workspace", "mode": "rw"}
            elif agent.workspace is not None:
                _workspace_binds(fleet, agent.name, agent.workspace, binds, env, mounts=extras.workspace)
            ports = sorted(set(agent.ports.values()))
            hc = self.api.create_host_config(
                binds=binds,
                port_bindings={f"{p}/tcp": ("127.0.0.1", None) for p in ports},
                extra_hosts={"fleet-proxy": "host-gateway"},
                network_mode=self._network(),
                **common_hc,
            )
            kwargs = {"ports": [(p, "tcp") for p in ports], "hostname": agent.name}
        c = self._call(
            resource, self.api.create_container, image=agent.image.ref, command=list(agent.command) if agent.command else None,
            name=L.agent_container(fleet, agent.name), labels=lab, environment=env, host_config=hc,
            tty=True, stdin_open=True, working_dir="/workspace" if (agent.workspace or agent.host) else None,
            **kwargs,
        )
        if extras.on_created is not None:
            extras.on_created(c["Id"])
        self._call(resource, self.api.start, c["Id"])
        return self._call(resource, made.outcome, self.api, c["Id"])  # its published ports: routes go there

    def start_agent(self, fleet: str, agent: ObservedAgent) -> Outcome:
        self._call(f"agent {agent.name}", self.api.start, agent.id)
        return self._call(f"agent {agent.name}", made.outcome, self.api, agent.id)  # ports change on a start

    def restart_agent(self, fleet: str, agent: ObservedAgent) -> Outcome:
        self._call(f"agent {agent.name}", self.api.restart, agent.id, timeout=STOP_TIMEOUT)
        return self._call(f"agent {agent.name}", made.outcome, self.api, agent.id)

    def stop_agent(self, fleet: str, agent: ObservedAgent) -> None:
        self._call(f"agent {agent.name}", self.api.stop, agent.id, timeout=STOP_TIMEOUT)

    def remove_agent(self, fleet: str, agent: ObservedAgent) -> None:
        """Stop and remove the agent's container (gone already: fine)."""
        self._remove(f"agent {agent.name}", agent.id, fleet)

    # ------------------------------------------------------------------ volumes (capability "volumes")

    def _volumes(self, fleet: str) -> list[str]:
        vols = self.api.volumes(filters={"label": L.project_filter(fleet)}).get("Volumes") or []
        out = []
        for v in vols:
            host = (v.get("Labels") or {}).get(L.HOST) or ""
            if (v.get("Labels") or {}).get(L.ENGINE) != self.engine:
                continue  # made for another engine name (the same daemon reached another way)
            if v["Name"] in (L.workspace_volume(fleet, host), L.legacy_workspace_volume(fleet, host)):
                out.append(v["Name"])  # labels alone do not make a volume fleet's
        return out

    def observe_volumes(self, fleet: str) -> tuple[str, ...]:
        """The fleet's workspace volumes: labelled as the fleet's AND named as fleet names them."""
        return tuple(sorted(self._call(f"fleet {fleet} volumes", self._volumes, fleet)))

    def upload_workspace(self, fleet: str, owner: str, workspace: Workspace, image: ImageRef) -> str:
        """Create `owner`'s workspace volume on this engine and copy the workspace
        directory into it (upload.py); a note. For engines that cannot bind-mount
        this machine's directories (`engine:`); `image` (the owner's) runs the helper."""
        resource = f"workspace {owner}"
        if not self._call(resource, docker_images.exists, self.api, image.ref):
            if image.build is not None:
                raise ProviderError(resource, f"image {image.ref} is not built{self._on()}; run `fleet apply` again")
            self.pull_image(fleet, image, resource)
        note: str = self._call(resource, docker_upload.upload, self.api, fleet, owner, workspace.path, image.ref,
                               self.engine, resource)
        return note

    def partial_volumes(self, fleet: str) -> tuple[str, ...]:
        """The fleet's workspace volumes whose upload did not finish (cut off): not uploaded yet."""
        found: tuple[str, ...] = self._call(f"fleet {fleet} uploads", docker_upload.partial, self.api, fleet)
        return found

    def _on(self) -> str:
        return f" on {self.engine}" if self.engine is not None else ""

    def remove_volume(self, fleet: str, name: str) -> bool:
        """Remove one of the fleet's workspace volumes; False when it was gone already."""
        from docker.errors import NotFound

        resource = f"volume {name}"
        try:
            info = self.api.inspect_volume(name)
        except NotFound:
            return False
        host = (info.get("Labels") or {}).get(L.HOST) or ""
        if (info.get("Labels") or {}).get(L.PROJECT) != fleet or (info.get("Labels") or {}).get(L.ENGINE) != self.engine \
                or name not in (
            L.workspace_volume(fleet, host), L.legacy_workspace_volume(fleet, host)
        ):
            raise ProviderError(resource, f"is not a workspace volume of fleet {fleet}; not touching it")
        if host:  # a helper left by a cut-off upload still mounts it
            self._call(resource, docker_upload.forget_helper, self.api, fleet, host)
        try:
            self._call(resource, self.api.remove_volume, name, force=True)
        except ProviderError:
            try:
                self.api.inspect_volume(name)
            except NotFound:
                return False  # removed meanwhile
            raise
        return True


if TYPE_CHECKING:  # mypy checks that the class implements the protocol and its declared capabilities
    _provider: base.Provider = DockerProvider()
    _images: base.Images = DockerProvider()
    _network: base.Network = DockerProvider()
    _volumes: base.Volumes = DockerProvider()
    _events: base.Events = DockerProvider()
    _archive: base.Archive = DockerProvider()
    _inventory: base.Inventory = DockerProvider()
