"""Resolving a valid `FleetFile` to the `Desired` the rest of fleet works on:
defaults merged under each agent, shared hosts' image, workspace and env given
to their agents, paths made absolute, build contexts hashed into image names,
the FLEET_* environment and the fleet file protected inside a shared workspace.

Runs only on a file with no problems; the only I/O is hashing build contexts
and looking at workspace paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from reconciler.core import labels
from reconciler.core.model import (
    BuildSpec,
    Desired,
    DesiredAgent,
    DesiredHost,
    ImageRef,
    ModalOptions,
    ProxySettings,
    WorkspaceSpec,
)
from reconciler.core.routes import service_urls
from reconciler.load import pathrules
from reconciler.load.buildctx import context_hash
from reconciler.load.schema import FleetFile, WorkspaceMap


def _image(fleet: str, base: Path, image: str | None, build: Any) -> ImageRef:
    if build is not None:
        ctx = (base / build.context).resolve()
        digest = context_hash(ctx, build.dockerfile, dict(build.args))
        return ImageRef(
            ref=labels.build_image(fleet, digest),
            build=BuildSpec(context=ctx, dockerfile=build.dockerfile, args=dict(build.args), context_hash=digest),
        )
    assert image is not None
    return ImageRef(ref=image)


def _workspace(base: Path, ws: str | WorkspaceMap | None, file: Path, uploaded: bool = False) -> WorkspaceSpec | None:
    if ws is None:
        return None
    mode: Literal["shared", "copy", "worktree"] = "shared"
    branch: str | None = None
    if isinstance(ws, str):
        path = (base / ws).resolve()
    else:
        path, mode, branch = (base / ws.path).resolve(), ws.mode, ws.branch
    # copy and worktree modes mount another directory, and Modal uploads a copy:
    # the fleet file an agent could reach there is not the one fleet reads
    read_only = pathrules.protected_files(path, [file.resolve()]) if mode == "shared" and not uploaded else ()
    return WorkspaceSpec(path=path, mode=mode, branch=branch, read_only=read_only)


def _command(cmd: Any) -> tuple[str, ...] | None:
    if cmd is None:
        return None
    if isinstance(cmd, str):
        return ("/bin/sh", "-c", cmd)
    return tuple(cmd)


def _engine(value: str | None) -> str | None:
    """An `engine:` as it names the engine everywhere (plans, labels, provider keys):
    as written, without surrounding blanks."""
    return value.strip() if value is not None else None


def resolve(spec: FleetFile, file: Path) -> Desired:
    base = file.parent.resolve()
    fleet = spec.fleet
    d = spec.defaults
    proxy = ProxySettings(port=spec.proxy.port, bind=spec.proxy.bind, tls=spec.proxy.tls)
    hosts: dict[str, DesiredHost] = {}
    for name, h in spec.hosts.items():
        # disabled agents keep their ports: toggling `enabled` must not replace the host
        ports = sorted({p for a in spec.agents.values() if a.host == name for p in a.ports.values()})
        modal = None
        if h.provider == "modal":
            modal = ModalOptions(
                app=h.app, environment=h.environment, timeout=h.timeout or 86400, idle_timeout=h.idle_timeout,
                cpu=h.cpu, memory=h.memory, region=h.region, restore=h.restore,
            )
        image = _image(fleet, base, h.image or (None if h.build else d.image), h.build or (None if h.image else d.build))
        hosts[name] = DesiredHost(
            name=name, provider=h.provider, image=image,
            # Modal and other engines get a copy uploaded, not this directory
            workspace=_workspace(base, h.workspace, file, uploaded=h.provider == "modal" or h.engine is not None),
            env=dict(h.env), ports=tuple(ports), modal=modal, engine=_engine(h.engine),
        )
    agents: dict[str, DesiredAgent] = {}
    for name, a in spec.agents.items():
        host = hosts.get(a.host) if a.host else None
        env = dict(d.env)
        if host is not None:
            env.update(host.env)
        env.update(a.env)
        env.update({"FLEET_NAME": fleet, "FLEET_AGENT": name, "FLEET_HOST": a.host or name})
        for svc, url in service_urls(name, a.ports, proxy).items():
            env[labels.env_name(svc)] = url
        if host is not None:
            image = host.image
            workspace = host.workspace
        else:
            own_image = a.image or (None if a.build else d.image)
            own_build = a.build or (None if a.image else d.build)
            image = _image(fleet, base, own_image, own_build)
            workspace = _workspace(base, a.workspace, file, uploaded=a.engine is not None)
        agents[name] = DesiredAgent(
            name=name,
            host=a.host,
            provider=host.provider if host else "docker",
            engine=host.engine if host else _engine(a.engine),
            image=image,
            workspace=workspace,
            command=_command(a.command if a.command is not None else d.command),
            message=a.message,
            env=env,
            ports=dict(a.ports),
            grants=tuple(dict.fromkeys(list(d.grants) + list(a.grants))),
            grant_defs={
                g: spec.grants[g].model_dump() for g in dict.fromkeys(list(d.grants) + list(a.grants)) if g in spec.grants
            },
            restart=a.restart or d.restart or "always",
            enabled=a.enabled,
            capabilities=tuple(sorted(set(a.capabilities) | set(spec.hosts[a.host].capabilities if a.host is not None else ()))),
        )
    grants = {k: v.model_dump() for k, v in spec.grants.items()}
    return Desired(fleet=fleet, file=file.resolve(), hosts=hosts, agents=agents, proxy=proxy, grants=grants)

