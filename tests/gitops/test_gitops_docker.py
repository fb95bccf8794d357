"""GitOps commands against the real engine: exit codes, JSON plans, saved plans
(applied exactly, refused when stale or foreign), --target and --replace."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import run_fleet

from .helpers import containers, validate_plan_output, write

pytestmark = pytest.mark.docker

SECRET = "tok-5ecret-7q"
NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def fleet_file(tmp_path, name: str, image: str, agents: str, extra: str = ""):
    """fleet.yaml with `agents` (lines indented by two, one agent per line)
    and `extra` top-level lines."""
    text = (
        f"fleet: {name}\n"
        "defaults:\n"
        f"  image: {image}\n"
        '  command: ["sleep", "infinity"]\n'
        "  env: {TZ: UTC}\n"
        + (extra.rstrip() + "\n" if extra else "")
        + "agents:\n"
        + agents.rstrip()
        + "\n"
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def agent_env(client, fleet: str, agent: str) -> dict[str, str]:
    c = client.containers.get(f"fleet_{fleet}_{agent}")
    return dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])


def test_diff_exit_codes(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "  worker: {}")
    # pending: 2 with the flag, 0 without
    r = run_fleet("diff", "--exit-code", str(path))
    assert r.code == 2, r.text
    assert "create" in r.out
    assert run_fleet("diff", str(path)).code == 0
    assert run_fleet("plan", "--exit-code", str(path)).code == 2
    assert containers(docker_client, fleet_name) == {}  # diff and plan change nothing
    assert run_fleet("apply", "--yes", str(path)).code == 0
    # in sync: 0, in every output format
    for fmt in ("text", "json", "markdown"):
        r = run_fleet("diff", "--exit-code", "-o", fmt, str(path))
        assert r.code == 0, (fmt, r.text)
    assert json.loads(run_fleet("diff", "-o", "json", str(path)).out)["in_sync"] is True
    status = run_fleet("status", "-o", "markdown", str(path))
    assert status.code == 0 and "| Agent | Host | Provider | State | Ports |" in status.out
    assert "| `worker` | (private) | docker | running |" in status.out
    # an agent crashed: drift, 2
    docker_client.containers.get(f"fleet_{fleet_name}_worker").stop(timeout=1)
    r = run_fleet("diff", "--exit-code", str(path))
    assert r.code == 2 and "start" in r.out
    # errors: 1, never 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("worker: {}", "worker: {restart: sometimes}"))
    r = run_fleet("diff", "--exit-code", str(bad))
    assert r.code == 1 and "restart" in r.err and "Traceback" not in r.text
    r = run_fleet("diff", "--exit-code", str(path), env=NO_ENGINE)
    assert r.code == 1 and "no Docker engine answers" in r.err
    r = run_fleet("diff", "--exit-code", "--target", "nobody", str(path))
    assert r.code == 1 and "known agents: worker" in r.err
    r = run_fleet("diff", "--exit-code", "--output", "yaml", str(path))
    assert r.code == 1, r.text  # a usage error too: 2 is reserved for "changes pending"
    r = run_fleet("diff", "--exit-code", str(tmp_path / "missing.yaml"))
    assert r.code == 1 and "no such file" in r.err


def test_json_output_create_replace_destroy_with_mask_env(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "  keep: {}\n  change: {}\n  remove: {}")
    assert run_fleet("apply", "--yes", str(path)).code == 0
    fleet_file(tmp_path, fleet_name, base_image, f"  keep: {{}}\n  change: {{env: {{API_KEY: {SECRET}}}}}\n  add: {{env: {{X: {SECRET}}}}}")
    r = run_fleet("diff", "-o", "json", "--mask-env", "--exit-code", str(path))
    assert r.code == 2, r.text
    assert SECRET not in r.text
    doc = json.loads(r.out)
    validate_plan_output(doc)
    assert doc["fleet"] == fleet_name and doc["format_version"] == 1 and len(doc["spec_hash"]) == 64
    got = {(c["action"], c["kind"], c["name"]) for c in doc["changes"]}
    assert got == {("create", "agent", "add"), ("replace", "agent", "change"), ("destroy", "agent", "remove")}
    by = {c["name"]: c for c in doc["changes"]}
    assert by["change"]["before"] == {"env.API_KEY": None} and by["change"]["after"] == {"env.API_KEY": "***"}
    assert by["change"]["cause"] == "spec changed: env.API_KEY" and by["change"]["provider"] == "docker"
    assert by["add"]["before"] is None and by["add"]["after"]["env.X"] == "***" and by["add"]["after"]["env.TZ"] == "***"
    assert by["add"]["after"]["command"] == ["sleep", "infinity"]
    assert by["remove"]["after"] is None and by["remove"]["before"]["env.TZ"] == "***"
    assert by["remove"]["cause"] == "not in fleet.yaml"
    assert doc["unchanged"] == {"count": 1, "resources": [{"kind": "agent", "name": "keep"}]}
    # unmasked, env values are shown (only grants are never shown by value)
    plain = run_fleet("plan", "-o", "json", str(path))
    assert plain.code == 0 and SECRET in plain.out
    validate_plan_output(json.loads(plain.out))
    # markdown and text are masked the same way
    md = run_fleet("diff", "--output", "markdown", "--mask-env", str(path))
    assert md.code == 0 and SECRET not in md.text
    assert "| Action | Kind | Name | Host | Cause |" in md.out and "**replace**" in md.out
    assert "<details><summary>1 unchanged</summary>" in md.out
    text = run_fleet("diff", "--mask-env", str(path))
    assert SECRET not in text.text and "env.API_KEY: null -> ***" in text.out


def test_saved_plan_is_applied_exactly_without_reading_fleet_yaml(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "  a: {}")
    assert run_fleet("apply", "--yes", str(path)).code == 0
    old_a = containers(docker_client, fleet_name)["agent:a"][0]
    fleet_file(tmp_path, fleet_name, base_image, "  a: {env: {TZ: Europe/Paris}}\n  b: {}")
    plan_path = tmp_path / "reviewed.plan"  # any name: a saved plan is recognised by its content
    r = run_fleet("plan", "--out", str(plan_path), str(path))
    assert r.code == 0, r.text
    assert "Saved the plan" in r.out
    assert stat.S_IMODE(os.stat(plan_path).st_mode) == 0o600
    saved = json.loads(plan_path.read_text())
    assert saved["kind"] == "fleet-plan" and saved["format_version"] == 1 and saved["fleet"] == fleet_name
    assert saved["observed_fingerprint"] and saved["spec_hash"] and saved["desired"]["agents"]["b"]
    assert {a["id"] for a in saved["plan"]["actions"]} == {"agent:a", "agent:b"}
    assert containers(docker_client, fleet_name)["agent:a"][0] == old_a  # planning changed nothing

    # after the review, fleet.yaml changes again and then even breaks: apply must not care
    fleet_file(tmp_path, fleet_name, base_image, "  a: {env: {TZ: Asia/Tokyo}}\n  c: {}")
    path.write_text(path.read_text() + "\n  this is: [not valid\n")
    r = run_fleet("apply", str(plan_path), cwd=tmp_path)
    assert r.code == 0, r.text
    assert "fleet.yaml is not read" in r.out
    now = containers(docker_client, fleet_name)
    assert set(now) == {"agent:a", "agent:b"}  # b from the plan; no c
    assert now["agent:a"][0] != old_a
    assert agent_env(docker_client, fleet_name, "a")["TZ"] == "Europe/Paris"  # the planned value
    assert all(status == "running" for _, status in now.values())

    # a plan is used once: the world it was made from is gone
    before = containers(docker_client, fleet_name)
    r = run_fleet("apply", str(plan_path))
    assert r.code == 1 and "plan is stale" in r.err
    assert containers(docker_client, fleet_name) == before


def test_stale_plan_is_refused_and_changes_nothing(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "  a: {}\n  b: {}")
    assert run_fleet("apply", "--yes", str(path)).code == 0
    fleet_file(tmp_path, fleet_name, base_image, "  a: {}\n  b: {env: {TZ: Europe/Paris}}\n  c: {}")
    plan_path = tmp_path / "plan.json"
    assert run_fleet("plan", "--out", str(plan_path), str(path)).code == 0
    docker_client.containers.get(f"fleet_{fleet_name}_a").remove(force=True)  # removed by hand
    before = containers(docker_client, fleet_name)
    r = run_fleet("apply", "--yes", str(plan_path))
    assert r.code == 1, r.text
    assert "plan is stale" in r.err and "agent a" in r.err and "is gone" in r.err
    assert "Traceback" not in r.text
    assert containers(docker_client, fleet_name) == before  # same containers, same states
    # --dry-run refuses the same way
    r = run_fleet("apply", "--dry-run", str(plan_path))
    assert r.code == 1 and "plan is stale" in r.err
    assert containers(docker_client, fleet_name) == before


def test_plans_for_another_fleet_or_version_are_refused(tmp_path, docker_client, base_image, fleet_name):
    path = fleet_file(tmp_path, fleet_name, base_image, "  a: {}")
    plan_path = tmp_path / "plan.json"
    assert run_fleet("plan", "--out", str(plan_path), str(path)).code == 0
    other = write(tmp_path / "other.yaml", path.read_text().replace(f"fleet: {fleet_name}", "fleet: someone-else"))

    def refused(*args: str, says: str, plan: str | None = None) -> None:
        target = tmp_path / "edited.json"
        if plan is not None:
            target.write_text(plan)
        r = run_fleet("apply", "--yes", *(a if a != "PLAN" else str(target if plan is not None else plan_path) for a in args))
        assert r.code == 1, r.text
        assert says in r.err, r.err
        assert "Traceback" not in r.text

    refused("PLAN", "--fleet", "someone-else", says=f"this plan is for fleet {fleet_name}, not someone-else")
    refused("PLAN", "-f", str(other), says=f"this plan is for fleet {fleet_name}, not someone-else")
    refused("PLAN", "--target", "a", says="cannot change it")
    text = plan_path.read_text()
    data = json.loads(text)
    refused("PLAN", says="plan format version 2 is not supported", plan=json.dumps({**data, "format_version": 2}))
    refused("PLAN", says="was made by fleet 0.0.1", plan=json.dumps({**data, "fleet_version": "0.0.1"}))
    tampered = json.loads(text)
    tampered["desired"]["agents"]["a"]["env"]["TZ"] = "Europe/Paris"
    refused("PLAN", says="modified after it was made", plan=json.dumps(tampered))
    refused("PLAN", says="was it cut short", plan=text[: len(text) // 2])
    diff_json = run_fleet("diff", "-o", "json", str(path)).out
    refused("PLAN", says="not a saved plan", plan=diff_json)
    assert containers(docker_client, fleet_name) == {}
    # the right fleet, named explicitly, is accepted
    r = run_fleet("apply", str(plan_path), "--fleet", fleet_name, "-f", str(path))
    assert r.code == 0, r.text
    assert set(containers(docker_client, fleet_name)) == {"agent:a"}


def test_target_and_replace_touch_only_the_named_agents(tmp_path, docker_client, base_image, fleet_name):
    agents = "  solo: {}\n  a1: {host: pod}\n  a2: {host: pod}"
    path = fleet_file(tmp_path, fleet_name, base_image, agents, extra="hosts:\n  pod: {}")
    r = run_fleet("apply", "--yes", "--target", "a1", str(path))
    assert r.code == 0, r.text
    assert "limited to --target a1" in r.out
    assert set(containers(docker_client, fleet_name)) == {"host:pod", "agent:a1"}  # a1 and the host it needs
    assert run_fleet("apply", "--yes", "-t", "solo", str(path)).code == 0
    first = containers(docker_client, fleet_name)
    assert set(first) == {"host:pod", "agent:a1", "agent:solo"}

    # both a1 and solo change; targeting solo replaces solo only
    changed = agents.replace("solo: {}", "solo: {env: {TZ: Europe/Paris}}").replace("a1: {host: pod}", "a1: {host: pod, env: {TZ: Asia/Tokyo}}")
    fleet_file(tmp_path, fleet_name, base_image, changed, extra="hosts:\n  pod: {}")
    r = run_fleet("diff", "-o", "json", "--target", "solo", str(path))
    assert [(c["action"], c["name"]) for c in json.loads(r.out)["changes"]] == [("replace", "solo")]
    assert run_fleet("apply", "--yes", "--target", "solo", str(path)).code == 0
    second = containers(docker_client, fleet_name)
    assert second["agent:solo"][0] != first["agent:solo"][0]
    assert second["agent:a1"] == first["agent:a1"] and second["host:pod"] == first["host:pod"]

    # --replace: a fresh container for an unchanged agent, nothing else disturbed
    assert run_fleet("apply", "--yes", "--target", "a1", str(path)).code == 0
    third = containers(docker_client, fleet_name)
    r = run_fleet("apply", "--yes", "--replace", "solo", "--target", "solo", str(path))
    assert r.code == 0, r.text
    assert "replace requested (--replace)" in r.out
    fourth = containers(docker_client, fleet_name)
    assert fourth["agent:solo"][0] != third["agent:solo"][0]
    assert {k: v for k, v in fourth.items() if k != "agent:solo"} == {k: v for k, v in third.items() if k != "agent:solo"}

    # unknown names: a clear error listing the agents, nothing changed
    for args, says in (
        (("--target", "a3"), "fleet {f} has no agent 'a3' (known agents: a1, a2, solo)"),
        (("--target", "pod"), "'pod' is a host, not an agent; target its agents instead (a1, a2)"),
        (("--replace", "sol"), "fleet.yaml has no agent 'sol' (known agents: a1, a2, solo); did you mean 'solo'?"),
    ):
        r = run_fleet("apply", "--yes", *args, str(path))
        assert r.code == 1, r.text
        assert says.format(f=fleet_name) in r.err, r.err
    assert containers(docker_client, fleet_name) == fourth
    # and the plan made with --target is saved as such
    plan_path = tmp_path / "plan.json"
    assert run_fleet("plan", "--out", str(plan_path), "--target", "a2", str(path)).code == 0
    saved = json.loads(plan_path.read_text())
    assert saved["options"]["targets"] == ["a2"]
    assert [a["id"] for a in saved["plan"]["actions"]] == ["agent:a2"]
