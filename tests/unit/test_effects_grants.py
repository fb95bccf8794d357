"""Grant credentials and the agents' network are plan actions decided by
reconcile (core/effects.py): issued with a create or replace of an agent with
grants, revoked when an agent that holds one goes or loses its grants, the
network created before the first container on it. Pure: hand-made
Desired/Observed (the real engine tests are tests/grants/ and
tests/e2e/test_docker_apply.py)."""

from __future__ import annotations

import json

from reconciler.core.effects import NETWORK_ID, issue_id, revoke_id
from reconciler.core.plan import CredentialIssue, CredentialRevoke, NetworkCreate, Plan, parse_action
from reconciler.core.reconcile import Options, reconcile, reconcile_destroy
from reconciler.gitops.output import plan_document, plan_markdown
from reconciler.view.render import event_line, plan_lines
from tests.gitops.helpers import validate_plan_output
from tests.unit.builders import agent, desired, host, observed, seen, seen_host


def holding(obs, *names, network=True):
    return obs.model_copy(update={"credentials": tuple(names), "network": network})


def by_id(plan: Plan):
    return {a.id: a for a in plan.actions}


# --------------------------------------------------------------------------- issue


def test_a_new_agent_with_grants_is_issued_a_credential_its_create_waits_for():
    coder = agent("coder", grants=("github",))
    plan = reconcile(desired(coder), observed())
    acts = by_id(plan)
    issue = acts[issue_id("coder")]
    assert isinstance(issue, CredentialIssue)
    assert (issue.op, issue.kind, issue.name, issue.cause) == ("issue", "credentials", "coder", "agent coder has grants: github")
    assert issue.desired_agent == coder
    assert issue.id in acts["agent:coder"].depends_on
    assert not issue.disruptive
    assert "1 to create" in plan.summary() and "1 credential to issue" in plan.summary()


def test_an_agent_without_grants_gets_no_credential_action():
    plan = reconcile(desired(agent("web")), observed())
    assert [a.kind for a in plan.actions] == ["agent"]


def test_nothing_to_change_issues_nothing():
    coder = agent("coder", grants=("github", "npm"))
    plan = reconcile(desired(coder), holding(observed(seen(coder)), "coder"))
    assert plan.empty and plan.summary() == "fleet demo is up to date"


def test_a_replaced_agent_with_grants_is_issued_a_fresh_credential():
    coder = agent("coder", grants=("github",), env={"TZ": "UTC"})
    plan = reconcile(desired(coder), holding(observed(seen(coder, env={})), "coder"))
    acts = by_id(plan)
    assert acts["agent:coder"].op == "replace"
    assert issue_id("coder") in acts["agent:coder"].depends_on
    assert revoke_id("coder") not in acts  # the new credential replaces the old one


def test_a_joining_agent_with_grants_waits_for_its_host_and_its_credential():
    box = host("box")
    coder = agent("coder", host="box", grants=("github",))
    acts = by_id(reconcile(desired(box, coder), observed()))
    assert set(acts["agent:coder"].depends_on) == {"host:box", issue_id("coder")}


def test_a_started_agent_keeps_the_credential_it_holds():
    coder = agent("coder", grants=("github",))
    plan = reconcile(desired(coder), holding(observed(seen(coder, state="exited", exit_code=1)), "coder"))
    assert [(a.op, a.kind) for a in plan.actions] == [("start", "agent")]


# --------------------------------------------------------------------------- revoke


def test_an_agent_gone_from_fleet_yaml_loses_its_credential_after_its_container():
    coder = agent("coder", grants=("github",))
    running = seen(coder)
    plan = reconcile(desired(agent("web")), holding(observed(running, seen(agent("web"))), "coder"))
    acts = by_id(plan)
    revoke = acts[revoke_id("coder")]
    assert isinstance(revoke, CredentialRevoke)
    assert (revoke.op, revoke.kind, revoke.name) == ("revoke", "credentials", "coder")
    assert revoke.cause == "agent coder is not in fleet.yaml"
    destroy = next(a for a in plan.actions if a.kind == "agent" and a.op == "destroy")
    assert revoke.depends_on == (destroy.id,)
    assert "1 credential to revoke" in plan.summary()


def test_an_agent_that_lost_its_grants_is_replaced_and_its_credential_revoked():
    coder = agent("coder")
    plan = reconcile(desired(coder), holding(observed(seen(coder, grants=("github",))), "coder"))
    acts = by_id(plan)
    assert acts["agent:coder"].op == "replace" and issue_id("coder") not in acts
    revoke = acts[revoke_id("coder")]
    assert revoke.cause == "agent coder has no grants" and revoke.depends_on == ("agent:coder",)


def test_a_credential_left_without_a_container_is_revoked_once():
    plan = reconcile(desired(agent("web")), holding(observed(seen(agent("web"))), "old"))
    assert [(a.op, a.name, a.depends_on) for a in plan.actions] == [("revoke", "old", ())]
    # once revoked, the next apply has nothing to do
    assert reconcile(desired(agent("web")), observed(seen(agent("web")))).empty


def test_no_prune_and_targets_leave_other_credentials_alone():
    web = agent("web")
    obs = holding(observed(seen(web), seen(agent("gone", grants=("github",)))), "gone")
    assert reconcile(desired(web), obs, Options(prune=False)).empty
    assert revoke_id("gone") not in by_id(reconcile(desired(web), obs, Options(targets=frozenset({"web"}))))


def test_fleet_destroy_revokes_every_credential_after_its_container():
    coder = agent("coder", grants=("github",))
    running = seen(coder)
    plan = reconcile_destroy(holding(observed(running, seen(agent("web"))), "coder", "stale"))
    acts = by_id(plan)
    destroy = next(a for a in plan.actions if a.kind == "agent" and a.name == "coder")
    assert acts[revoke_id("coder")].depends_on == (destroy.id,)
    assert acts[revoke_id("stale")].depends_on == ()
    assert acts[revoke_id("coder")].cause == "fleet destroy"


# --------------------------------------------------------------------------- network


def test_a_missing_network_is_created_before_the_containers_on_it():
    box = host("box")
    plan = reconcile(desired(box, agent("j", host="box"), agent("p")), observed().model_copy(update={"network": False}))
    acts = by_id(plan)
    net = acts[NETWORK_ID]
    assert isinstance(net, NetworkCreate)
    assert (net.op, net.kind, net.name, net.cause) == (
        "create", "network", "fleet_agents", "the agents' network fleet_agents does not exist")
    assert NETWORK_ID in acts["host:box"].depends_on and NETWORK_ID in acts["agent:p"].depends_on
    assert NETWORK_ID not in acts["agent:j"].depends_on  # joined agents use their holder's network
    assert "1 network to create" in plan.summary() and "2 to create" in plan.summary()


def test_a_missing_network_with_nothing_to_create_is_no_action():
    web = agent("web")
    assert reconcile(desired(web), observed(seen(web)).model_copy(update={"network": False})).empty


def test_an_existing_network_is_not_created_again():
    assert NETWORK_ID not in by_id(reconcile(desired(agent("p")), observed()))


# --------------------------------------------------------------------------- contract


def test_the_new_actions_survive_a_saved_plan_and_render():
    coder = agent("coder", grants=("github",))
    obs = holding(observed(seen(agent("old", grants=("npm",)))), "old", network=False)
    plan = reconcile(desired(coder), obs)
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert {type(a) for a in again.actions} >= {CredentialIssue, CredentialRevoke, NetworkCreate}
    for a in plan.actions:
        assert type(parse_action(json.loads(a.model_dump_json()))) is type(a)
    doc = plan_document(plan, desired(coder))
    validate_plan_output(doc)  # schemas/plan-output.schema.json knows the new kinds and actions
    rows = {c["id"]: c for c in doc["changes"]}
    assert rows[issue_id("coder")]["action"] == "issue" and rows[issue_id("coder")]["kind"] == "credentials"
    assert rows[issue_id("coder")]["after"] == {"grants": ["github"]}
    assert rows[revoke_id("old")]["before"] == {} and rows[NETWORK_ID]["before"] is None
    assert doc["summary"]["counts"]["issue"] == 1
    text = "\n".join(t.plain for t in plan_lines(plan))
    assert "issue    credentials coder  agent coder has grants: github" in text
    assert "revoke   credentials old  agent old is not in fleet.yaml" in text
    assert "create   network fleet_agents" in text
    assert "| `+` issue | credentials | `coder` |" in plan_markdown(plan, desired(coder))
    assert event_line("done", plan.get(issue_id("coder"))) == "issued credentials coder"


def test_the_fingerprint_sees_credentials_and_the_network():
    base = observed(seen(agent("web")))
    assert base.fingerprint() != holding(base, "web").fingerprint()
    assert base.fingerprint() != base.model_copy(update={"network": False}).fingerprint()
