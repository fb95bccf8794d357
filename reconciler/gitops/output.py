"""Plans and status as data for machines (JSON) and for pull requests (markdown).

`fleet diff`, `fleet plan` and `fleet status` render the pipeline's models three
ways; the text form lives in `render.py`, the other two here. The JSON document is
a stable, versioned contract (docs/output-format.md, schemas/plan-output.schema.json):
fields are only ever added within a `format_version`.

Secrets never reach these documents: grants appear by name only (the user grant
catalogue is not rendered at all), and env values are replaced by `***` when the
caller asks for masking (`--mask-env`).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from reconciler import __version__
from reconciler.core.model import Desired, split_key
from reconciler.core.plan import DISRUPTIVE, FORMAT_VERSION, Action, Plan
from reconciler.core.reconcile import Options, flatten
from reconciler.view.status import StatusRow, state_text

# Each JSON document names its kind and the version of that kind's format; a
# version changes only when a field changes meaning or goes (adding is free).
# FORMAT_VERSION (fleet diff / fleet plan -o json, kind fleet-diff; and saved plans) is core.plan's: one plan contract
STATUS_FORMAT_VERSION = 2  # fleet status -o json (kind fleet-status); 2: data, not display strings
VALIDATE_FORMAT_VERSION = 1  # fleet validate -o json
LS_FORMAT_VERSION = 1  # fleet ls -o json
DIFF_KIND = "fleet-diff"
STATUS_KIND = "fleet-status"
MASK = "***"

# the order a summary lists operations in (unknown future ops go last)
OP_ORDER = ["create", "join", "replace", "restart", "start", "stop", "destroy", "route", "message", "issue", "revoke",
            "build", "prepare", "upload", "snapshot", "release", "purge"]
SYMBOL = {
    "create": "+", "join": "+", "replace": "~", "restart": "~", "start": ">", "stop": "=",
    "destroy": "-", "route": "*", "message": ">", "issue": "+", "revoke": "-",
    "build": "+", "prepare": "+", "upload": "+", "snapshot": "*", "release": "-", "purge": "-",  # host side effects
}
# ops shown after the destroys they follow (a workspace released, a volume purged)
LATE_OPS = ("release", "purge")


def mask_values(flat: dict[str, Any] | None, mask_env: bool) -> dict[str, Any] | None:
    """Replace the value of every `env.*` key with `***` (None stays None: the
    key is absent on that side)."""
    if flat is None or not mask_env:
        return flat
    return {k: (MASK if k.startswith("env.") and v is not None else v) for k, v in flat.items()}


def before_after(action: Action) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The changed keys of an action, flattened to dotted paths.

    create/join: before is null (nothing exists) and after is the whole desired
    spec; destroy: before is the whole observed spec and after is null; replace:
    the keys that differ; start/restart/stop change no key ({} and {}).
    """
    op = action.op
    if op in ("create", "join"):
        spec = action.desired_host.spec() if action.kind == "host" and action.desired_host else None
        if spec is None and action.desired_agent is not None:
            spec = action.desired_agent.spec()
        return None, flatten(spec or {})
    if op == "destroy":
        obs = action.observed_host if action.kind == "host" else action.observed_agent
        return flatten(obs.spec if obs is not None else {}), None
    if op == "message":
        text = action.desired_agent.message if action.desired_agent else None
        return {}, {"message": text}
    if op == "route":
        return {}, flatten(action.route.model_dump() if action.route is not None else {})
    if op == "issue":  # grants by name only, never a credential
        return {}, {"grants": list(action.desired_agent.grants) if action.desired_agent else []}
    before = {c.key: c.before for c in action.changes}
    after = {c.key: c.after for c in action.changes}
    return before, after


def change_dict(action: Action, mask_env: bool = False) -> dict[str, Any]:
    before, after = before_after(action)
    provider, engine = split_key(action.provider)
    return {
        "id": action.id,
        "action": action.op,
        "kind": action.kind,
        "name": action.name,
        "host": action.host,
        "provider": provider,
        **({"engine": engine} if engine is not None else {}),
        "cause": action.cause,
        "disruptive": action.disruptive,
        "depends_on": list(action.depends_on),
        "changed_keys": [c.key for c in action.changes],
        "before": mask_values(before, mask_env),
        "after": mask_values(after, mask_env),
    }


def _op_rank(op: str) -> int:
    return OP_ORDER.index(op) if op in OP_ORDER else len(OP_ORDER)


def ordered(plan: Plan) -> list[Action]:
    """Display order: hosts before their agents, destroys last (agents, then
    hosts), then messages; stable by name."""
    kinds = {"image": -1, "network": -1, "host": 0, "credentials": 1, "agent": 1, "route": 2}

    def key(a: Action) -> tuple:
        destroy = a.op == "destroy" or a.op in LATE_OPS
        message = a.op == "message"
        late = a.op in LATE_OPS
        rank = kinds.get(a.kind, 3) if a.kind != "workspace" else -1  # prepares go first, with builds
        return (message, destroy, late, -rank if destroy else rank, a.name, a.id)

    return sorted(plan.actions, key=key)


def unchanged_list(plan: Plan) -> list[dict[str, str]]:
    out = []
    for u in plan.unchanged:
        kind, _, name = u.partition(":")
        out.append({"kind": kind, "name": name})
    return out


def summary_dict(plan: Plan) -> dict[str, Any]:
    counts = Counter(a.op for a in plan.actions)
    return {
        "text": plan.summary(),
        "counts": {op: counts[op] for op in sorted(counts, key=_op_rank)},
        "total": len(plan.actions),
        "unchanged": len(plan.unchanged),
        "disruptive": plan.disruptive,
    }


def plan_document(
    plan: Plan, desired: Desired | None = None, options: Options | None = None, mask_env: bool = False
) -> dict[str, Any]:
    """The versioned JSON form of a plan (what `fleet diff -o json` prints)."""
    opts = options or Options()
    return {
        "format_version": FORMAT_VERSION,
        "kind": DIFF_KIND,
        "fleet_version": __version__,
        "fleet": plan.fleet,
        "file": str(desired.file) if desired is not None else None,
        "spec_hash": plan.spec_hash or (desired.spec_hash if desired is not None else ""),
        "observed_fingerprint": plan.observed_fingerprint,
        "in_sync": plan.empty,
        "mask_env": mask_env,
        "options": {"prune": opts.prune, "targets": sorted(opts.targets), "replace": sorted(opts.replace)},
        "changes": [change_dict(a, mask_env) for a in ordered(plan)],
        **({"unreachable": dict(sorted(plan.unreachable.items()))} if plan.unreachable else {}),
        "unchanged": {"count": len(plan.unchanged), "resources": unchanged_list(plan)},
        "stopped": list(plan.stopped),  # agents left stopped after `fleet stop` (no action)
        "summary": summary_dict(plan),
    }


def plan_json(plan: Plan, desired: Desired | None = None, options: Options | None = None, mask_env: bool = False) -> str:
    return json.dumps(plan_document(plan, desired, options, mask_env), indent=2, default=str)


# --------------------------------------------------------------------------- markdown


def _cell(text: Any) -> str:
    """A table cell: no pipes or newlines break the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) and value == MASK else json.dumps(value, default=str)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"


def plan_markdown(
    plan: Plan, desired: Desired | None = None, options: Options | None = None, mask_env: bool = False
) -> str:
    """A compact pull-request comment: one table row per action, changed keys
    and unchanged resources folded into <details>."""
    opts = options or Options()
    lines = [f"<!-- fleet-diff: {plan.fleet} -->"]
    if plan.empty:
        lines.append(f"### fleet `{plan.fleet}` is up to date")
    else:
        lines.append(f"### fleet `{plan.fleet}`: {plan.summary().split(': ', 1)[-1]}")
    if opts.targets:
        lines += ["", "Limited to " + ", ".join(f"`{t}`" for t in sorted(opts.targets)) + " (`--target`)."]
    actions = ordered(plan)
    if actions:
        lines += ["", "| Action | Kind | Name | Host | Cause |", "| --- | --- | --- | --- | --- |"]
        for a in actions:
            op = f"**{a.op}**" if a.disruptive else a.op
            host = f"`{a.host}`" if a.host else ""
            lines.append(f"| `{SYMBOL.get(a.op, '?')}` {op} | {a.kind} | `{a.name}` | {host} | {_cell(a.cause)} |")
        keyed = [(a, c) for a in actions if a.op == "replace" for c in a.changes]
        if keyed:
            lines += ["", f"<details><summary>Changed keys ({len(keyed)})</summary>", "",
                      "| Name | Key | Before | After |", "| --- | --- | --- | --- |"]
            for a, c in keyed:
                secret = mask_env and c.key.startswith("env.")
                before = _code(MASK if secret and c.before is not None else c.before)
                after = _code(MASK if secret and c.after is not None else c.after)
                lines.append(f"| `{a.name}` | `{_cell(c.key)}` | {before} | {after} |")
            lines += ["", "</details>"]
    if plan.unchanged:
        names = ", ".join(f"{u['kind']} `{u['name']}`" for u in unchanged_list(plan))
        lines += ["", f"<details><summary>{len(plan.unchanged)} unchanged</summary>", "", names, "", "</details>"]
    spec = plan.spec_hash or (desired.spec_hash if desired is not None else "")
    footer = f"fleet {__version__}" + (f" · spec `{spec[:12]}`" if spec else "")
    lines += ["", f"<sub>{footer}</sub>", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- status


def status_document(desired: Desired, rows: Sequence[StatusRow]) -> dict[str, Any]:
    """The versioned JSON form of `fleet status` (docs/output-format.md,
    schemas/status-output.schema.json): the rows as data."""
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "kind": STATUS_KIND,
        "fleet_version": __version__,
        "fleet": desired.fleet,
        "spec_hash": desired.spec_hash,
        "agents": [r.as_json() for r in rows],
    }


def status_json(desired: Desired, rows: Sequence[StatusRow]) -> str:
    return json.dumps(status_document(desired, rows), indent=2)


def status_markdown(fleet: str, rows: Sequence[StatusRow]) -> str:
    lines = [f"<!-- fleet-status: {fleet} -->", f"### fleet `{fleet}`: {len(rows)} agent{'s' if len(rows) != 1 else ''}"]
    with_urls = any(r.urls for r in rows)
    if rows:
        header = ["Agent", "Host", "Provider", "State", "Ports"] + (["URLs"] if with_urls else [])
        lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for r in rows:
            ports = ", ".join(
                f"{p.service} {p.container_port}" + (f"→{p.host_port}" if p.host_port else "") for p in r.ports
            )
            host = _cell(r.host) if r.host else "(private)"
            cells = [f"`{r.agent}`", host, r.provider, _cell(state_text(r)), _cell(ports) or "-"]
            if with_urls:
                cells.append(" ".join(r.urls.values()) or "-")
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
