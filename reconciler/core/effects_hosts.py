"""The side effects around hosts and agents, decided here and carried out as
plan actions (each with a cause), never inside a provider's create or destroy:

- `image build`: a `build:` image the engine does not have yet, before the
  creates that run it (Docker);
- `host snapshot`: a Modal host's filesystem, saved before the host is
  destroyed or replaced;
- `restore: latest`, resolved to a snapshot id now, so a saved plan restores
  the snapshot that was reviewed (or the one this plan takes of the sandbox it
  replaces);
- `workspace prepare` (a copy or a git worktree) before the create that mounts
  it, and `workspace release` after the destroy of its owner (the work it holds
  is kept: that rule is applied when it runs, and said in the cause);
- `workspace upload`: a host (or private agent) on a remote Docker engine
  (`engine:`) cannot mount this machine's directory: its workspace is copied
  into its named volume there, only while that volume does not exist on that
  engine (a later apply never overwrites the agents' work);
- `volume purge`: the fleet's workspace volumes on `fleet destroy --purge-workspaces`,
  on the engine each was found on.

`add_host_effects` takes the actions reconcile (or teardown) decided and
returns them with these added and the dependencies wired. Pure.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from reconciler.core import labels as L
from reconciler.core.actions import WorkspaceUpload
from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, Observed, WorkspaceSpec, split_key
from reconciler.core.plan import (
    Action,
    AgentCreate,
    AgentDestroy,
    AgentReplace,
    HostCreate,
    HostDestroy,
    HostReplace,
    HostSnapshot,
    ImageBuild,
    RestoreSpec,
    VolumePurge,
    WorkspacePurge,
    WorkspacePrepare,
    WorkspaceRelease,
)

SNAPSHOTTING = frozenset({"modal"})  # providers whose hosts are snapshotted before they go
BUILDING = frozenset({"docker"})  # providers whose `build:` images are built as plan actions
PREPARING = frozenset({"docker"})  # providers that mount workspace copies and worktrees


def _owner(kind: str, name: str) -> str:
    return f"agent {name}" if kind == "agent" else f"host {name}"


def _prepare_cause(ws: WorkspaceSpec, who: str, owner: str) -> str:
    if ws.mode == "copy":
        return f"copy {ws.path} to a workspace for {who} (kept as it is when it exists)"
    branch = ws.branch or f"fleet/{owner}"
    return f"git worktree of {ws.path} on branch {branch} for {who} (kept as it is when it exists)"


def _release_cause(ws: WorkspaceSpec, who: str) -> str:
    if ws.mode == "copy":
        return f"{who} goes: its workspace copy is kept (copies go with `fleet destroy --purge-workspaces`)"
    return f"{who} goes: remove its worktree, kept if it holds unsaved work (uncommitted changes, unique commits)"


def _workspace_of(spec: Mapping[str, object]) -> WorkspaceSpec | None:
    raw = spec.get("workspace")
    if not isinstance(raw, dict) or raw.get("mode", "shared") == "shared":
        return None
    try:
        return WorkspaceSpec.model_validate(raw)
    except ValueError:
        return None


def _created(a: Action) -> tuple[str, str, str, ImageRef, WorkspaceSpec | None] | None:
    """(kind, name, provider key, image, private workspace) of what `a` creates, if anything."""
    if isinstance(a, (HostCreate, HostReplace)):
        h: DesiredHost = a.desired_host
        return "host", h.name, h.key, h.image, h.workspace
    if isinstance(a, (AgentCreate, AgentReplace)):
        g: DesiredAgent = a.desired_agent
        return "agent", g.name, g.key, g.image, g.workspace if g.host is None else None
    return None


def _at(key: str) -> str:
    """What ids of per-engine actions carry after the resource's name: "" on the
    local engine (ids as before engines existed), "@ENGINE" on another one."""
    engine = split_key(key)[1]
    return "" if engine is None else f"@{engine}"


def _built_on(observed: Observed, key: str) -> set[str]:
    """The fleet's built images on the engine of `key`."""
    if split_key(key)[1] is None:
        return set(observed.images)
    return set(observed.engine_images.get(key, ()))


def _upload_cause(kind: str, name: str, engine: str, ws: WorkspaceSpec, volume: str) -> str:
    how = "" if ws.mode in ("shared", "copy") else f" (a copy: mode {ws.mode} applies to this machine's engine only)"
    return (f"{_owner(kind, name)} runs on {engine}: {ws.path} is copied to volume {volume} there{how}; "
            "once, while the volume does not exist (it keeps the agents' work)")


def add_host_effects(
    actions: Iterable[Action],
    observed: Observed,
    desired: Desired | None = None,
    purge_volumes: bool = False,
) -> list[Action]:
    """`actions` with the side effects they need, in plan order: builds and
    prepares first, snapshots before the destroys they guard, releases and
    purges after. `desired` None: a teardown (`fleet destroy`), where every
    destroyed owner's workspace is released."""
    acts = list(actions)
    extra_deps: dict[str, list[str]] = {}
    before: list[Action] = []
    after: list[Action] = []
    seen: dict[str, Action] = {}

    def once(a: Action) -> Action:
        if a.id not in seen:
            seen[a.id] = a
            (after if isinstance(a, (WorkspaceRelease, WorkspacePurge, VolumePurge)) else before).append(a)
        return seen[a.id]

    snapshots: dict[str, str] = {}  # observed host id -> id of its snapshot action
    for a in acts:
        if isinstance(a, (HostDestroy, HostReplace)) and a.observed_host.provider in SNAPSHOTTING:
            obs = a.observed_host
            snap = once(HostSnapshot(
                id=f"host:{obs.name}:snapshot:{obs.id[:12]}", name=obs.name, provider=obs.key,
                cause=f"keep host {obs.name}'s /workspace before it goes (restorable with `restore: latest`)",
                depends_on=a.depends_on, observed_host=obs,
            ))
            snapshots[obs.id] = snap.id
            extra_deps.setdefault(a.id, []).append(snap.id)

    out: list[Action] = []
    for a in acts:
        made = _created(a)
        if made is not None:
            kind, name, key, image, ws = made
            provider, engine = split_key(key)
            build_id = None
            if provider in BUILDING and image.build is not None and image.ref not in _built_on(observed, key):
                build = once(ImageBuild(
                    id=f"image:{image.ref}{_at(key)}:build", name=image.ref, provider=key, image=image,
                    cause=f"image {image.ref} is not built yet" if engine is None
                    else f"image {image.ref} is not built on {engine} yet",
                ))
                build_id = build.id
                extra_deps.setdefault(a.id, []).append(build.id)
            if provider in PREPARING and engine is not None and ws is not None:
                volume = L.workspace_volume(observed.fleet, name)
                if volume not in observed.engine_volumes.get(key, ()):
                    up = once(WorkspaceUpload(
                        id=f"workspace:{name}:upload", name=name, provider=key, workspace=ws, image=image,
                        cause=_upload_cause(kind, name, engine, ws, volume),
                        depends_on=(build_id,) if build_id else (),
                    ))
                    extra_deps.setdefault(a.id, []).append(up.id)
                ws = None  # nothing to prepare on this machine: the volume is the workspace
            if provider in PREPARING and ws is not None and ws.mode != "shared":
                prep = once(WorkspacePrepare(id=f"workspace:{name}:prepare", name=name, provider=provider,
                                             cause=_prepare_cause(ws, _owner(kind, name), name), workspace=ws))
                extra_deps.setdefault(a.id, []).append(prep.id)
        if isinstance(a, (HostCreate, HostReplace)):
            a = _with_restore(a, observed, snapshots)
        out.append(a)

    for a in out:
        if isinstance(a, (AgentDestroy, HostDestroy)):
            if isinstance(a, AgentDestroy) and a.observed_agent.host:
                continue  # an agent on a shared host: the workspace is its host's
            obs_rec = a.observed_agent if isinstance(a, AgentDestroy) else a.observed_host
            if obs_rec.provider not in PREPARING or obs_rec.engine is not None:
                continue  # on a remote engine the workspace is a volume there: kept, purged explicitly
            ws = _workspace_of(obs_rec.spec)
            if ws is None:
                continue
            kind = "agent" if isinstance(a, AgentDestroy) else "host"
            if desired is not None and obs_rec.name in (desired.agents if kind == "agent" else desired.hosts):
                continue  # a duplicate going: the owner stays, and so does its workspace
            once(WorkspaceRelease(id=f"workspace:{obs_rec.name}:release:{obs_rec.id[:12]}", name=obs_rec.name,
                                  provider=obs_rec.key, cause=_release_cause(ws, _owner(kind, obs_rec.name)),
                                  depends_on=(a.id,), workspace=ws))

    if purge_volumes:
        # after the containers mounting them: holders, and private agents on remote engines
        waits = tuple(a.id for a in out if isinstance(a, HostDestroy) or isinstance(a, AgentDestroy) and a.observed_agent.engine)
        on_engines = [("docker", vol) for vol in observed.volumes] + [
            (key, vol) for key, vols in sorted(observed.engine_volumes.items()) for vol in vols]
        for key, vol in sorted(on_engines, key=lambda kv: (kv[1], kv[0])):
            engine = split_key(key)[1]
            once(VolumePurge(id=f"volume:{vol}{_at(key)}:purge", name=vol, provider=key, depends_on=waits,
                             cause="--purge-workspaces: a shared host's /workspace volume" if engine is None
                             else f"--purge-workspaces: a /workspace volume on {engine}"))
        # copies and worktrees: after every destroy (and the release of the same owner)
        gone = tuple(a.id for a in out if isinstance(a, (HostDestroy, AgentDestroy)))
        for owner in sorted(observed.workspace_copies):
            released = tuple(x.id for x in after if isinstance(x, WorkspaceRelease) and x.name == owner)
            once(WorkspacePurge(id=f"workspace:{owner}:purge", name=owner, provider="docker",
                                cause=f"--purge-workspaces: the copy or worktree of {owner}, unsaved work included",
                                depends_on=gone + released))

    wired = [a.model_copy(update={"depends_on": tuple(a.depends_on) + tuple(extra_deps[a.id])})
             if a.id in extra_deps else a for a in out]
    return before + wired + after


def _with_restore(a: HostCreate | HostReplace, observed: Observed, snapshots: dict[str, str]) -> HostCreate | HostReplace:
    """`restore: latest` resolved: the snapshot this plan takes of the sandbox a
    replace removes, else the newest one observed, else none (the image)."""
    host = a.desired_host
    if host.provider not in SNAPSHOTTING or host.modal is None or host.modal.restore != "latest":
        return a
    taken = snapshots.get(a.observed_host.id) if isinstance(a, HostReplace) else None
    if taken is not None:
        spec, said = RestoreSpec(taken_by=taken), "restore from the snapshot taken before it goes"
    elif observed.snapshots.get(host.name):
        snap = observed.snapshots[host.name]
        spec, said = RestoreSpec(snapshot=snap), f"restore from snapshot {snap}"
    else:
        spec, said = RestoreSpec(), "no snapshot to restore: starts from the image"
    return a.model_copy(update={"restore": spec, "cause": f"{a.cause}; {said}"})
