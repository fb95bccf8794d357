"""What goes: built images nothing uses any more, everything on `fleet destroy`,
and the check that holds back a save destroying most of a fleet. Pure."""

from __future__ import annotations

from reconciler.core.builder import Builder
from reconciler.core.effects import destroy_effects
from reconciler.core.effects_hosts import add_host_effects
from reconciler.core.model import Observed, ObservedAgent, ObservedHost
from reconciler.core.plan import Action, AgentDestroy, HostDestroy, ImageDestroy, Plan, RouteSpec, RouteUpdate


def image_actions(remove: list[str], cause: str, after: list[Action], provider: str = "docker") -> list[ImageDestroy]:
    """`provider`: the key of the engine they are on ("docker@ENGINE": ids carry "@ENGINE")."""
    waits = tuple(a.id for a in after if a.kind in ("host", "agent"))
    at = provider[len("docker"):] if provider.startswith("docker@") else ""
    return [
        ImageDestroy(id=f"image:{ref}{at}:destroy", name=ref, provider=provider, cause=cause, depends_on=waits)
        for ref in sorted(remove)
    ]


def unused_images(b: Builder) -> None:
    """The fleet's built images that nothing uses once this plan is carried out:
    not fleet.yaml (hosts and agents, enabled or not) and not a container that
    stays. Each edit of a build context makes a new image, so without this they
    pile up. A run limited to some agents (--target) or one that keeps what
    fleet.yaml no longer names (--no-prune) removes none."""
    if not (b.observed.images or b.observed.engine_images) or b.opts.targets or not b.opts.prune:
        return
    going = {a.gone for a in b.actions if a.gone is not None}
    records: list[ObservedAgent | ObservedHost] = [*b.observed.agents, *b.observed.hosts]

    def kept(key: str | None) -> set[str]:
        """What fleet.yaml and the containers that stay use (on the engine of `key`; None: anywhere)."""
        keep = {h.image.ref for h in b.desired.hosts.values() if key is None or h.key == key}
        keep |= {a.image.ref for a in b.desired.agents.values() if key is None or a.key == key}
        for obs in records:
            image = obs.spec.get("image")
            if obs.id not in going and isinstance(image, str) and (key is None or obs.key == key):
                keep.add(image)
        return keep

    keep = kept(None)
    unused = [ref for ref in b.observed.images if ref not in keep]
    b.actions.extend(image_actions(unused, "built image no longer used", b.actions))
    for key, refs in sorted(b.observed.engine_images.items()):  # per remote engine: what runs there
        there = kept(key)
        b.actions.extend(image_actions([r for r in refs if r not in there], "built image no longer used", b.actions, key))


def reconcile_destroy(observed: Observed, cause: str = "fleet destroy", purge_volumes: bool = False) -> Plan:
    """Everything the fleet owns goes: agents first, then their hosts (Modal
    hosts snapshotted first, workspaces released after; with `purge_volumes`
    the workspace volumes too)."""

    actions: list[Action] = []
    waits: dict[str, list[str]] = {}
    for obs in sorted(observed.agents, key=lambda a: a.name):
        act = AgentDestroy(id=f"agent:{obs.name}:destroy:{obs.id[:12]}", name=obs.name, host=obs.host,
                           provider=obs.key, cause=cause, observed_agent=obs)
        actions.append(act)
        if obs.host:
            waits.setdefault(obs.host, []).append(act.id)
    for host in sorted(observed.hosts, key=lambda h: h.name):
        actions.append(HostDestroy(id=f"host:{host.name}:destroy:{host.id[:12]}", name=host.name, provider=host.key,
                                   cause=cause, observed_host=host, depends_on=tuple(waits.get(host.name, ()))))
    actions.extend(destroy_effects(observed, actions, cause))  # credentials the agents hold
    if observed.routes is not None:
        actions.append(RouteUpdate(cause="remove this fleet's routes", depends_on=tuple(a.id for a in actions),
                                   route=RouteSpec(remove=True)))
    actions.extend(image_actions(list(observed.images), f"{cause}: an image built for this fleet", actions))
    for key, refs in sorted(observed.engine_images.items()):  # built on remote engines
        actions.extend(image_actions(list(refs), f"{cause}: an image built for this fleet", actions, key))
    actions = add_host_effects(actions, observed, None, purge_volumes)
    dark = tuple(f"engine {e} unreachable ({why}): what the fleet has there is not removed; "
                 "run `fleet destroy` again when it answers" for e, why in sorted(observed.unreachable.items()))
    return Plan(fleet=observed.fleet, actions=tuple(actions), observed_fingerprint=observed.fingerprint(),
                warnings=observed.warnings + dark, unreachable=observed.unreachable)


def mass_destroy(plan: Plan, observed: Observed) -> tuple[int, int] | None:
    """(agents destroyed, agents the fleet has) when `plan` destroys more than
    half of the fleet's agents (a save of just `fleet: NAME`), else None. The
    watch loop holds such a plan until it is confirmed. Duplicates and
    replacements do not count: only agents that would be gone afterwards."""
    total = {a.name for a in observed.agents}
    kept = {a.name for a in plan.actions if a.kind == "agent" and a.op != "destroy"}
    kept |= {u.split(":", 1)[1] for u in plan.unchanged if u.startswith("agent:")}
    gone = {a.name for a in plan.actions if a.kind == "agent" and a.op == "destroy"} - kept
    return (len(gone), len(total)) if total and 2 * len(gone) > len(total) else None
