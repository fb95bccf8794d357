"""The JSON and markdown forms of a plan, from hand-built states (no engine):
every kind of action against the documented schema, masking, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.gitops import output
from reconciler.core.model import Desired, DesiredAgent, DesiredHost, ImageRef, Observed, ObservedAgent, ObservedHost
from reconciler.core.reconcile import Options, reconcile

from .helpers import validate_plan_output

SECRET = "s3cr3t-value-9x"


def agent(name: str, **kw) -> DesiredAgent:
    kw.setdefault("image", ImageRef(ref="img:1"))
    kw.setdefault("command", ("sleep", "infinity"))
    return DesiredAgent(name=name, **kw)


def seen(a: DesiredAgent, state: str = "running", **changes) -> ObservedAgent:
    made = a.model_copy(update=changes) if changes else a
    return ObservedAgent(
        name=a.name, host=made.host, provider=made.provider, id=f"{a.name:0<12}" + "f" * 52, state=state,
        exit_code=137 if state == "exited" else None, spec_hash=made.spec_hash, spec=made.spec(),
        created="2026-01-01T00:00:00Z",
    )


def world():
    """Desired and observed with one of each: create, join (on a new host),
    replace (env change), start (exited), stop (disabled), destroy (removed),
    unchanged."""
    new = agent("new", env={"TOKEN_LIKE": SECRET})
    changed = agent("changed", env={"TZ": "Europe/Paris", "API_KEY": SECRET})
    crashed = agent("crashed")
    off = agent("off", enabled=False)
    same = agent("same", grants=("github",))
    joiner = agent("joiner", host="pod", env={"X": SECRET})
    pod = DesiredHost(name="pod", image=ImageRef(ref="img:1"))
    gone = agent("gone", env={"OLD": SECRET})
    desired = Desired(
        fleet="demo", file=Path("/nowhere/fleet.yaml"), hosts={"pod": pod},
        agents={a.name: a for a in (new, changed, crashed, off, same, joiner)},
        grants={"internal": {"hosts": ["api.internal"], "header": "X-Token", "value": "{token}"}},
    )
    observed = Observed(
        fleet="demo",
        agents=(
            seen(changed, env={"TZ": "UTC", "API_KEY": "old-" + SECRET}),
            seen(crashed, state="exited"),
            seen(off.model_copy(update={"enabled": True})),
            seen(same),
            seen(gone),
        ),
    )
    return desired, observed


def test_every_action_kind_renders_to_the_documented_schema():
    desired, observed = world()
    plan = reconcile(desired, observed)
    doc = output.plan_document(plan, desired, Options())
    validate_plan_output(doc)
    by = {(c["action"], c["name"]): c for c in doc["changes"]}
    assert {"create", "join", "replace", "start", "stop", "destroy"} <= {c["action"] for c in doc["changes"]}
    assert doc["format_version"] == 1 and doc["fleet"] == "demo" and doc["spec_hash"] == desired.spec_hash
    assert doc["in_sync"] is False

    create = by[("create", "new")]
    assert create["before"] is None and create["after"]["image"] == "img:1"
    assert create["after"]["env.TOKEN_LIKE"] == SECRET  # env shown unless masked
    host = by[("create", "pod")]
    assert host["kind"] == "host" and host["before"] is None and host["after"]["provider"] == "docker"
    join = by[("join", "joiner")]
    assert join["host"] == "pod" and join["depends_on"] == ["host:pod"]

    replace = by[("replace", "changed")]
    assert replace["disruptive"] is True
    assert replace["cause"].startswith("spec changed")
    assert replace["before"] == {"env.API_KEY": "old-" + SECRET, "env.TZ": "UTC"}
    assert replace["after"] == {"env.API_KEY": SECRET, "env.TZ": "Europe/Paris"}
    assert replace["changed_keys"] == ["env.API_KEY", "env.TZ"]

    destroy = by[("destroy", "gone")]
    assert destroy["after"] is None and destroy["before"]["env.OLD"] == SECRET
    assert destroy["cause"] == "not in fleet.yaml"
    start = by[("start", "crashed")]
    assert start["cause"] == "exited 137" and start["before"] == {} and start["after"] == {}
    assert by[("stop", "off")]["cause"] == "enabled: false"

    assert doc["unchanged"] == {"count": 1, "resources": [{"kind": "agent", "name": "same"}]}
    assert doc["summary"]["total"] == len(doc["changes"]) and doc["summary"]["disruptive"] is True
    assert doc["summary"]["counts"]["create"] == 2
    # hosts come before the agents joining them; destroys come last
    order = [(c["action"], c["name"]) for c in doc["changes"]]
    assert order.index(("create", "pod")) < order.index(("join", "joiner"))
    assert order[-1] == ("destroy", "gone")


def test_mask_env_hides_every_env_value_in_json_markdown_and_text():
    from rich.console import Console

    from reconciler.view import render

    desired, observed = world()
    plan = reconcile(desired, observed)
    doc = output.plan_document(plan, desired, mask_env=True)
    validate_plan_output(doc)
    text = json.dumps(doc)
    assert SECRET not in text
    assert doc["mask_env"] is True
    replace = next(c for c in doc["changes"] if c["action"] == "replace")
    assert replace["before"] == {"env.API_KEY": "***", "env.TZ": "***"}
    create = next(c for c in doc["changes"] if c["name"] == "new")
    assert create["after"]["env.TOKEN_LIKE"] == "***" and create["after"]["image"] == "img:1"
    md = output.plan_markdown(plan, desired, mask_env=True)
    assert SECRET not in md and "***" in md
    console = Console(record=True, width=200, no_color=True)
    render.print_plan(console, plan, mask_env=True)
    assert SECRET not in console.export_text()
    # unmasked, the values are there (so the masking is what hid them)
    assert SECRET in output.plan_json(plan, desired)


def test_grant_names_appear_but_never_the_grant_catalogue():
    desired, observed = world()
    text = output.plan_json(reconcile(desired, Observed(fleet="demo")), desired)
    assert '"github"' in text  # the agent's grant, by name
    assert "api.internal" not in text and "X-Token" not in text


def test_in_sync_document_and_markdown():
    a = agent("web")
    desired = Desired(fleet="demo", file=Path("/nowhere/fleet.yaml"), agents={"web": a})
    plan = reconcile(desired, Observed(fleet="demo", agents=(seen(a),)))
    doc = output.plan_document(plan, desired)
    validate_plan_output(doc)
    assert doc["in_sync"] is True and doc["changes"] == [] and doc["summary"]["total"] == 0
    md = output.plan_markdown(plan, desired)
    assert "is up to date" in md and "| Action |" not in md
    assert "<details><summary>1 unchanged</summary>" in md


def test_markdown_is_a_compact_table_with_unchanged_collapsed():
    desired, observed = world()
    plan = reconcile(desired, observed, Options())
    md = output.plan_markdown(plan, desired)
    lines = md.splitlines()
    assert lines[0] == "<!-- fleet-diff: demo -->"
    assert lines[1].startswith("### fleet `demo`: ")
    header = lines.index("| Action | Kind | Name | Host | Cause |")
    rows = [ln for ln in lines[header + 2 :] if ln.startswith("| `")]
    assert len(rows) >= len(plan.actions)
    assert any("**replace**" in r and "`changed`" in r and "spec changed" in r for r in rows)
    assert any("join" in r and "`joiner`" in r and "`pod`" in r for r in rows)
    assert "<details><summary>1 unchanged</summary>" in md
    assert "agent `same`" in md
    assert "<details><summary>Changed keys (2)</summary>" in md


def test_targets_are_recorded_in_the_document():
    desired, observed = world()
    opts = Options(targets=frozenset({"joiner"}))
    plan = reconcile(desired, observed, opts)
    doc = output.plan_document(plan, desired, opts)
    validate_plan_output(doc)
    assert doc["options"]["targets"] == ["joiner"]
    assert {c["name"] for c in doc["changes"] if c["kind"] != "route"} == {"pod", "joiner"}


@pytest.mark.parametrize("bad", [{"format_version": 2}, {"kind": "fleet-plan"}, {"changes": [{"action": "explode"}]}])
def test_the_schema_rejects_what_the_format_does_not_allow(bad):
    import jsonschema

    desired, observed = world()
    doc = output.plan_document(reconcile(desired, observed), desired)
    doc.update(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate_plan_output(doc)
