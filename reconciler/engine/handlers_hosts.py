"""Handlers of the host side-effect actions (core/effects_hosts.py decides
them): build an image, snapshot a host, prepare, upload and release a workspace,
purge a volume. One provider (or $FLEET_HOME) call each; what they made goes into
the execution state (engine/effects_hosts.py reads it back for the creates).

Layer `engine`. May import: `core`, `state`, `load`, `net`, `grants`, `routing`, `providers`.
"""

from __future__ import annotations

from reconciler.core.errors import FleetError
from reconciler.core.outcome import Outcome
from reconciler.core.actions import WorkspaceUpload
from reconciler.core.plan import HostSnapshot, ImageBuild, VolumePurge, WorkspacePrepare, WorkspacePurge, WorkspaceRelease
from reconciler.engine.effects_hosts import SNAPSHOT, mounts_outcome
from reconciler.engine.handlers import handles
from reconciler.engine.state import Context
from reconciler.providers.base import images_of, snapshots_of, volumes_of
from reconciler.state import workspaces


@handles(ImageBuild)
def _image_build(ctx: Context, a: ImageBuild) -> Outcome:
    images = images_of(ctx.provider_of(a.provider))
    if images is None:
        raise FleetError(f"provider {a.provider} builds no images")
    images.build_image(ctx.fleet, a.image, f"image {a.name}")
    return Outcome()


@handles(HostSnapshot)
def _host_snapshot(ctx: Context, a: HostSnapshot) -> Outcome:
    snaps = snapshots_of(ctx.provider_of(a.observed_host.key))
    if snaps is None:
        raise FleetError(f"provider {a.observed_host.provider} takes no snapshots")
    taken = snaps.snapshot_host(ctx.fleet, a.observed_host)
    if taken is None:
        return Outcome()
    return Outcome(
        id=taken, values={SNAPSHOT: taken},
        note=f"host {a.name}: filesystem saved as snapshot {taken}; `restore: latest` on hosts.{a.name} starts from it",
    )


@handles(WorkspacePrepare)
def _workspace_prepare(ctx: Context, a: WorkspacePrepare) -> Outcome:
    return mounts_outcome(workspaces.prepare(ctx.fleet, a.name, a.workspace))


@handles(WorkspaceUpload)
def _workspace_upload(ctx: Context, a: WorkspaceUpload) -> Outcome:
    vols = volumes_of(ctx.provider_of(a.provider))
    if vols is None:
        raise FleetError(f"provider {a.provider} keeps no volumes")
    return Outcome(note=vols.upload_workspace(ctx.fleet, a.name, a.workspace, a.image))


@handles(WorkspaceRelease)
def _workspace_release(ctx: Context, a: WorkspaceRelease) -> Outcome:
    """Removed only when no work would be lost (the rule the cause states);
    otherwise the note says where it was kept."""
    try:
        return Outcome(note=workspaces.release(ctx.fleet, a.name, a.workspace))
    except (FleetError, ValueError) as exc:
        return Outcome(note=f"kept workspace of {a.name}: {exc}")


@handles(WorkspacePurge)
def _workspace_purge(ctx: Context, a: WorkspacePurge) -> Outcome:
    removed = workspaces.purge_one(ctx.fleet, a.name)
    return Outcome(note=f"removed workspace {removed} (--purge-workspaces)" if removed else None)


@handles(VolumePurge)
def _volume_purge(ctx: Context, a: VolumePurge) -> Outcome:
    vols = volumes_of(ctx.provider_of(a.provider))
    if vols is None:
        raise FleetError(f"provider {a.provider} keeps no volumes")
    removed = vols.remove_volume(ctx.fleet, a.name)
    return Outcome(note=f"removed volume {a.name}" if removed else None)
