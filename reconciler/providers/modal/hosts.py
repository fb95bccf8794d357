"""Modal hosts: a shared host is a named, tagged Modal Sandbox, created from an
image (or a snapshot), with the workspace uploaded into it; before it goes, its
filesystem is snapshotted (capability "snapshots") so no work is lost.

Part of layer `providers`. May import: `core`, `state`, `load`, `net`.
"""

from __future__ import annotations

import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler.core import labels as L
from reconciler.core.errors import ProviderError
from reconciler.core.outcome import Outcome
from reconciler.core.model import MODAL_ROUTER_PORT, Desired, DesiredHost, ModalOptions, ObservedHost
from reconciler.providers.base import HostExtras
from reconciler.providers.modal import local
from reconciler.providers.modal.session import UPLOAD_CHUNK, ModalSession, _first_line, _modal
from reconciler.providers.modal.tags import CREATED_TAG, PENDING, PORTS_TAG, WORKDIR, _b64, app_name
from reconciler.state import usage


class ModalHosts(ModalSession):
    """The Provider methods for hosts, and snapshots."""

    def _image(self, fleet: str, host: DesiredHost, restore: str | None) -> tuple[Any, str | None]:
        """The image to start from, and the snapshot id when restoring one:
        `restore` when given (resolved at plan time), else with `restore: latest`
        the newest snapshot recorded here (old path), else the host's image."""
        modal = _modal()
        opts = host.modal or ModalOptions()
        if restore is None and opts.restore == "latest":
            restore = self.observe_snapshots(fleet).get(host.name)
        if restore:  # "" (base.NO_RESTORE): the plan found no snapshot, start from the image
            return modal.Image.from_id(restore, client=self.client), restore
        b = host.image.build
        if b is not None:
            return modal.Image.from_dockerfile(
                str(Path(b.context) / b.dockerfile), context_dir=str(b.context), build_args=dict(b.args)
            ), None
        return modal.Image.from_registry(host.image.ref), None

    def create_host(self, desired: Desired, host: DesiredHost, restore: str | None = None,
                    extras: HostExtras | None = None) -> Outcome:
        """Create the host's sandbox (from snapshot `restore` when given), start its
        port router, upload the workspace (not into a restored snapshot), then tag
        it with its spec hash. A note when it was restored."""
        modal = _modal()
        fleet = desired.fleet
        resource = f"host {host.name}"
        opts = host.modal or ModalOptions()
        app = app_name(fleet, opts)
        usage.record(fleet, "modal")
        tags = {
            L.PROJECT: fleet, L.KIND: "host", L.HOST: host.name, L.SPEC_HASH: PENDING,
            PORTS_TAG: str(MODAL_ROUTER_PORT), CREATED_TAG: str(int(time.time())),
        }
        with self._errors(resource, host.name):
            app_obj = modal.App.lookup(app, environment_name=opts.environment, create_if_missing=True, client=self.client)
            local.remember_app(fleet, self.server_url, opts.environment, app, app_obj.app_id)
            image, restored = self._image(fleet, host, restore)
            try:
                sb = modal.Sandbox.create(
                    app=app_obj, name=host.name, tags=tags, image=image, timeout=opts.timeout,
                    idle_timeout=opts.idle_timeout, workdir=WORKDIR, encrypted_ports=[MODAL_ROUTER_PORT],
                    cpu=opts.cpu, memory=opts.memory, region=opts.region, client=self.client,
                )
            except modal.exception.AlreadyExistsError:
                raise self._name_taken(fleet, host, app) from None
            except modal.exception.NotFoundError as exc:
                if restored:
                    raise ProviderError(
                        resource, f"snapshot {restored} is gone on Modal ({_first_line(exc)}); remove "
                        f"hosts.{host.name}.restore to start from the image"
                    ) from None
                raise
            self._remember(fleet, host.name, sb)
            try:
                tunnels = {p: t.url for p, t in sb.tunnels(timeout=60).items()}
                local.remember_tunnels(fleet, sb.object_id, tunnels)
                self._ensure_router(sb, resource, required=False, fresh=True)
                if host.workspace is not None and restored is None:
                    self._upload(sb, Path(host.workspace.path), resource)
                tags[L.SPEC_HASH] = _b64(host.spec_hash)
                sb.set_tags(tags)
            except BaseException:
                try:
                    sb.terminate()
                except Exception:
                    pass
                raise
        local.remember_spec(fleet, host.spec_hash, host.spec())
        note = f"host {host.name}: started from snapshot {restored} (restore: latest)" if restored else None
        return Outcome(note=note, id=sb.object_id, urls=tunnels)  # its tunnel URLs: routes go there

    def _name_taken(self, fleet: str, host: DesiredHost, app: str) -> ProviderError:
        modal = _modal()
        resource = f"host {host.name}"
        env = host.modal.environment if host.modal else None
        try:
            other = modal.Sandbox.from_name(app, host.name, environment_name=env, client=self.client)
            tags = other.get_tags()
        except Exception:
            tags = {}
        if tags.get(L.PROJECT) == fleet and tags.get(L.HOST) == host.name:
            return ProviderError(
                resource, f"a sandbox of this fleet named {host.name} already runs in Modal app {app}; "
                "run `fleet apply` again to pick it up"
            )
        return ProviderError(
            resource, f"the sandbox name {host.name} is taken in Modal app {app} by a sandbox fleet did not create "
            f"for this fleet; terminate it, or set hosts.{host.name}.app to another app"
        )

    def _upload(self, sb: Any, path: Path, resource: str) -> None:
        """Copy a local directory into /workspace: a tar stream into `tar -x` (no
        tools beyond tar are needed in the image)."""
        if not path.is_dir():
            raise ProviderError(resource, f"workspace {path} is not a directory")

        def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if not (info.isreg() or info.isdir() or info.issym() or info.islnk()):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            return info

        with tempfile.SpooledTemporaryFile(max_size=32 << 20) as buf:
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for entry in sorted(path.iterdir()):
                    tar.add(str(entry), arcname=entry.name, filter=owned_by_root)
            size = buf.tell()
            buf.seek(0)
            p = sb.exec("tar", "-x", "-C", WORKDIR, "-f", "-", text=False, timeout=1800)
            while True:
                chunk = buf.read(UPLOAD_CHUNK)
                if not chunk:
                    break
                p.stdin.write(chunk)
                p.stdin.drain()
            p.stdin.write_eof()
            p.stdin.drain()
            err = p.stderr.read()
            code = p.wait()
        if code != 0:
            why = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {code}"]
            hint = "; the host image needs tar" if code in (126, 127) else ""
            raise ProviderError(resource, f"upload of workspace {path} ({size} bytes) failed: {why[0][:200]}{hint}")

    def start_host(self, fleet: str, host: ObservedHost) -> None:
        raise ProviderError(f"host {host.name}", "a Modal sandbox cannot be restarted; `fleet apply --replace` re-creates it")

    def snapshot_host(self, fleet: str, host: ObservedHost) -> str | None:
        """Capability "snapshots": snapshot the sandbox's filesystem and record it
        in $FLEET_HOME/snapshots/<fleet>/<host>.json; the snapshot's image id.
        None when there is nothing to save: the sandbox has ended, or was never
        set up (its workspace upload did not finish). When the snapshot fails the
        sandbox is left alone (ProviderError), so no work is lost."""
        modal = _modal()
        resource = f"host {host.name}"
        if host.id in self._ended:
            return None  # terminated by this process
        with self._errors(resource, host.name):
            try:
                sb = self._existing(host.id)
                tags = self._owned_tags(sb, fleet, resource)
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                return None
            if tags.get(L.SPEC_HASH) == PENDING:
                return None
            try:
                image = sb.snapshot_filesystem()
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                return None  # it has ended already: nothing to save
            except modal.exception.Error as exc:
                raise ProviderError(
                    resource, f"could not snapshot the filesystem ({_first_line(exc)}); the sandbox is left "
                    f"running so no work is lost: `fleet pull` what you need, then terminate sandbox {host.id} "
                    "in Modal and run `fleet apply` again"
                ) from None
            app = (host.spec.get("modal") or {}).get("app") or f"fleet-{fleet}"
            local.record_snapshot(fleet, host.name, image.object_id, host.id, app)
        return str(image.object_id)

    def observe_snapshots(self, fleet: str) -> dict[str, str]:
        """Capability "snapshots": host name -> its newest snapshot recorded on this
        machine (what `restore: latest` starts from). Local files only: no call to Modal."""
        return local.snapshots(fleet)

    def terminate_host(self, fleet: str, host: ObservedHost) -> None:
        """Terminate the host's sandbox, saving nothing; one that has ended or is
        gone is fine (idempotent)."""
        modal = _modal()
        resource = f"host {host.name}"
        with self._errors(resource, host.name):
            try:
                sb = self._existing(host.id)
                self._owned_tags(sb, fleet, resource)
                sb.terminate()
            except (modal.exception.NotFoundError, modal.exception.ConflictError):
                pass  # it has ended already
        local.forget_sandbox(fleet, host.id)
        self._ended.add(host.id)
        self._handles.pop(host.id, None)
        if self._by_name.get((fleet, host.name)) == host.id:
            del self._by_name[(fleet, host.name)]
