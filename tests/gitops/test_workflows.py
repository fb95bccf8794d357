"""The GitOps example's workflows, checked by the tools people run on workflows
(zizmor for security, actionlint for correctness) and by reading them: what can run
where is what examples/gitops/README.md says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT

GITOPS = ROOT / "examples" / "gitops"
WORKFLOWS = sorted((GITOPS / "workflows").glob("*.yml"))
ACTIONLINT_CONFIG = GITOPS / "actionlint.yaml"
BIN = Path(sys.executable).parent
SHA = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def tool(name: str) -> str:
    exe = BIN / name
    assert exe.exists(), f"{name} is not installed: run `make install` (it is in the `test` extra)"
    return str(exe)


def load(path: Path) -> dict:
    return YAML(typ="safe", pure=True).load(path.read_text())


def triggers(wf: dict) -> set[str]:
    on = wf.get("on", wf.get(True))  # YAML 1.1 readers turn `on` into True
    return {on} if isinstance(on, str) else set(on)


def self_hosted(job: dict) -> bool:
    runs_on = job.get("runs-on")
    return "self-hosted" in (runs_on if isinstance(runs_on, list) else [runs_on])


def steps(wf: dict):
    for name, job in wf["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def test_there_are_workflows():
    assert {p.name for p in WORKFLOWS} == {"fleet.yml", "fleet-pr.yml"}


def test_zizmor_reports_nothing_at_high_severity_and_nothing_at_all_by_default():
    r = subprocess.run([tool("zizmor"), "--offline", "--format", "json", "--persona", "auditor", *map(str, WORKFLOWS)],
                       capture_output=True, text=True, timeout=120)
    findings = json.loads(r.stdout)
    high = [f["ident"] for f in findings if f["determinations"]["severity"] == "High"]
    assert not high, r.stdout
    r = subprocess.run([tool("zizmor"), "--offline", "--format", "json", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout + r.stderr


def test_actionlint_passes_with_the_config_that_declares_the_runner_label():
    r = subprocess.run([tool("actionlint"), "-config-file", str(ACTIONLINT_CONFIG), *map(str, WORKFLOWS)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # and the config is what makes the custom label known
    r = subprocess.run([tool("actionlint"), "-config-file", "/dev/null", *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'label "fleet" is unknown' in r.stdout, r.stdout


def test_pull_requests_never_reach_the_fleet_machine():
    for path in WORKFLOWS:
        wf = load(path)
        on = triggers(wf)
        assert not on & {"pull_request_target", "workflow_run", "issue_comment"}, path.name
        if "pull_request" in on:
            # a pull_request run uses the PR's own copy of the workflow: all hosted, read-only
            assert wf["permissions"] == {"contents": "read"}, path.name
            for name, job in wf["jobs"].items():
                assert job["runs-on"] == "ubuntu-latest", f"{path.name}: {name}"
                assert "permissions" not in job and "environment" not in job, f"{path.name}: {name}"
    main = load(GITOPS / "workflows" / "fleet.yml")
    assert triggers(main) == {"push", "schedule", "workflow_dispatch"}
    assert main["on"]["push"]["branches"] == ["main"]
    assert main["permissions"] == {}


def test_apply_only_from_a_push_to_main_through_an_approved_environment_and_never_cancelled():
    wf = load(GITOPS / "workflows" / "fleet.yml")
    assert "concurrency" not in wf, "a workflow-level group would cancel a pending apply"
    applying = [(n, j) for n, j in wf["jobs"].items() for s in j.get("steps", []) if re.search(r"^\s*fleet apply", s.get("run", ""), re.M)]
    assert [n for n, _ in applying] == ["apply"]
    apply = wf["jobs"]["apply"]
    assert "github.event_name == 'push'" in apply["if"] and "github.ref == 'refs/heads/main'" in apply["if"]
    assert apply["environment"] == "fleet-production"
    assert "github.sha" in apply["concurrency"]["group"] and apply["concurrency"]["cancel-in-progress"] is False
    groups = [j["concurrency"]["group"] for n, j in wf["jobs"].items() if n != "apply" and "concurrency" in j]
    assert apply["concurrency"]["group"] not in groups
    for name, job in wf["jobs"].items():
        if self_hosted(job):
            assert "github.event_name" in job["if"], name


def test_actions_pinned_by_commit_no_persisted_credentials_least_permissions():
    for path in WORKFLOWS:
        wf = load(path)
        for job_name, step in steps(wf):
            uses = step.get("uses")
            if uses:
                assert SHA.match(uses), f"{path.name}: {job_name}: {uses} is not pinned by commit"
            if uses and uses.startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {job_name}"
        for name, job in wf["jobs"].items():
            perms = job.get("permissions", wf.get("permissions"))
            assert isinstance(perms, dict), f"{path.name}: {name} has no explicit permissions"
            writes = {k for k, v in perms.items() if v == "write"}
            assert writes <= ({"issues"} if name == "drift" else set()), f"{path.name}: {name}: {writes}"


@pytest.mark.parametrize("path", WORKFLOWS + [GITOPS / "README.md"], ids=lambda p: p.name)
def test_fleet_comes_from_the_repository_at_a_pinned_commit_not_from_pypi(path):
    text = path.read_text()
    assert "fleet-reconciler" not in text, f"{path.name} installs a package that is not published"
    if path.suffix == ".yml":
        installs = [s["run"] for _, s in steps(load(path)) if "pip install" in s.get("run", "")]
        assert installs and all('"git+${FLEET_GIT}@${FLEET_COMMIT}"' in r for r in installs)
        assert re.search(r"grep -Eq '\^\[0-9a-f\]\{40\}\$'", "\n".join(installs)), "the install refuses a placeholder commit"
