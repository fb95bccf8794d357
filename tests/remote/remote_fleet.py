"""Driving a fleet on the remote engine through the real pipeline stages
(observe -> reconcile -> execute) from `Desired` objects, and looking at the
remote engine straight through its socket (`remote_engine.docker()`)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, Observed, Workspace
from reconciler.core.plan import Plan
from reconciler.core.reconcile import reconcile, reconcile_destroy
from reconciler.engine.execute import execute
from reconciler.engine.observe import observe
from tests.conftest import BASE_IMAGE


def engine_of(remote) -> str:
    return f"ssh://{remote.name}"


def key_of(remote) -> str:
    return f"docker@{engine_of(remote)}"


def shared_fleet(fleet: str, remote, workspace: Path, agents: tuple[str, ...] = ("impl", "test"),
                 image: ImageRef | None = None, file: Path | None = None, extra: tuple[DesiredAgent, ...] = (),
                 messages: dict[str, str] | None = None) -> Desired:
    engine = engine_of(remote)
    img = image or ImageRef(ref=BASE_IMAGE)
    h = DesiredHost(name="big-box", image=img, workspace=Workspace(path=workspace), engine=engine)
    agts = {
        n: DesiredAgent(name=n, host="big-box", image=img, command=("sleep", "infinity"), engine=engine,
                        message=(messages or {}).get(n))
        for n in agents
    }
    for a in extra:
        agts[a.name] = a
    return Desired(fleet=fleet, file=file or workspace.parent / "fleet.yaml", hosts={"big-box": h}, agents=agts)


def keys(desired: Desired) -> list[str]:
    return sorted({"docker"} | {h.key for h in desired.hosts.values()} | {a.key for a in desired.agents.values()})


def plan_of(desired: Desired) -> tuple[Observed, Plan]:
    observed = observe(desired.fleet, keys(desired))
    return observed, reconcile(desired, observed)


def apply(desired: Desired) -> tuple[Observed, Plan]:
    observed, plan = plan_of(desired)
    result = execute(desired, plan, observed=observed)
    assert result.ok, result.failed
    return observed, plan


def destroy(desired: Desired, purge: bool = False) -> Plan:
    observed = observe(desired.fleet, keys(desired), volumes=purge)
    plan = reconcile_destroy(observed, purge_volumes=purge)
    result = execute(desired, plan, observed=observed)
    assert result.ok, result.failed
    return plan


def remote_exec(remote, fleet: str, agent: str, cmd: str) -> tuple[int, str]:
    """Run `cmd` in an agent's container straight on the remote engine (not through fleet)."""
    c = remote.docker().containers.get(f"fleet_{fleet}_{agent}")
    code, out = c.exec_run(["/bin/sh", "-c", cmd])
    return code, out.decode(errors="replace")


def cleanup_remote(remote, fleet: str) -> None:
    client = remote.docker()
    for c in client.containers.list(all=True, filters={"label": f"dev.fleet.project={fleet}"}):
        with contextlib.suppress(Exception):
            c.remove(force=True)
    for c in client.containers.list(all=True, filters={"label": "dev.fleet.upload"}):
        if c.labels.get("dev.fleet.upload", "").startswith(f"{fleet}/"):
            with contextlib.suppress(Exception):
                c.remove(force=True)
    for v in client.volumes.list(filters={"label": f"dev.fleet.project={fleet}"}):
        with contextlib.suppress(Exception):
            v.remove(force=True)
    for img in client.images.list(filters={"label": f"dev.fleet.project={fleet}"}):
        with contextlib.suppress(Exception):
            client.images.remove(img.id, force=True)


def captured(fn, *args, **kwargs) -> tuple[object, str]:
    """Call `fn`, returning its result and what it wrote to sys.stdout (bytes decoded)."""
    import sys

    buf = io.BytesIO()

    class Out:
        buffer = buf

        def write(self, s: str) -> int:
            buf.write(s.encode())
            return len(s)

        def flush(self) -> None:
            pass

    old = sys.stdout
    sys.stdout = Out()  # type: ignore[assignment]
    try:
        res = fn(*args, **kwargs)
    finally:
        sys.stdout = old
    return res, buf.getvalue().decode(errors="replace")
