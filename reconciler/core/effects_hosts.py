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
- `volume purge`: the fleet's workspace volumes on `fleet destroy --purge-workspaces`.

`add_host_effects` takes the actions reconcile (or teardown) decided and
returns them with these added and the dependencies wired. Pure.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, Observed, WorkspaceSpec
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
    """(kind, name, provider, image, private workspace) of what `a` creates, if anything."""
    if isinstance(a, (HostCreate, HostReplace)):
        h: DesiredHost = a.desired_host
        return "host", h.name, h.provider, h.image, h.workspace
    if isinstance(a, (AgentCreate, AgentReplace)):
        g: DesiredAgent = a.desired_agent
        return "agent", g.name, g.provider, g.image, g.workspace if g.host is None else None
    return None


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
    built = set(observed.images)
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
            kind, name, provider, image, ws = made
            if provider in BUILDING and image.build is not None and image.ref not in built:
                build = once(ImageBuild(id=f"image:{image.ref}:build", name=image.ref, provider=provider,
                                        cause=f"image {image.ref} is not built yet", image=image))
                extra_deps.setdefault(a.id, []).append(build.id)
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
            if obs_rec.provider not in PREPARING:
                continue
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
        waits = tuple(a.id for a in out if isinstance(a, HostDestroy))
        for vol in sorted(observed.volumes):
            once(VolumePurge(id=f"volume:{vol}:purge", name=vol, provider="docker",
                             cause="--purge-workspaces: a shared host's /workspace volume", depends_on=waits))
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
