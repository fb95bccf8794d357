"""Unambiguous names: no two resources of any fleets want the same container,
volume or image name, whatever their (valid) names; and the names fleet gives
are what makes a container its own (labels can be copied)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core import labels as L
from reconciler.core.reconcile import reconcile
from tests.conftest import run_fleet
from tests.unit.builders import agent, desired, host, observed, seen, seen_host

from .helpers import write

# DNS labels over a tiny alphabet (plus the word "host"), so collisions of any
# naive joining are likely to be generated.
label = st.one_of(
    st.from_regex(r"\A[aeh](?:[-aehbox]{0,6}[aeh])?\Z"),
    st.sampled_from(["host", "host-box", "box", "e-box", "a-e", "a", "e", "build", "workspace"]),
)
KINDS = {
    "agent": L.agent_container,
    "host": L.host_container,
    "volume": L.workspace_volume,
    "image": lambda fleet, _: L.build_image(fleet, "0" * 64),  # one repository per fleet; the tag is the hash
}


def named(kind: str, fleet: str, name: str) -> str:
    return KINDS[kind](fleet, name)


resource = st.tuples(st.sampled_from(["agent", "host", "volume", "image"]), label, label)


@settings(max_examples=2000, deadline=None, database=None)
@given(resource, resource)
def test_names_are_injective_across_kinds_and_fleets(one, two):
    one, two = [(k, f, "" if k == "image" else n) for k, f, n in (one, two)]
    if named(*one) == named(*two):
        assert one == two


@given(label, label)
def test_names_are_valid_docker_names(fleet, name):
    container = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
    for fn in (L.agent_container, L.host_container, L.workspace_volume):
        assert container.match(fn(fleet, name))
    repo, _, tag = L.build_image(fleet, "f" * 64).partition(":")
    assert re.match(r"^[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*$", repo) and tag == "f" * 16


def test_the_colliding_pairs_of_the_issue_no_longer_collide():
    # fleet a host e-box vs fleet a-e host box: one volume before
    assert L.legacy_workspace_volume("a", "e-box") == L.legacy_workspace_volume("a-e", "box")
    assert L.workspace_volume("a", "e-box") != L.workspace_volume("a-e", "box")
    # agent host-box vs host box in one fleet: one container name before
    assert L.legacy_agent_container("f", "host-box") == L.legacy_host_container("f", "box")
    assert L.agent_container("f", "host-box") != L.host_container("f", "box")
    assert L.agent_container("f", "host") != L.host_container("f", "")


def test_ownership_is_labels_and_the_name_fleet_gave():
    lab = {L.PROJECT: "f", L.KIND: "agent", L.AGENT: "web", L.NAMING: L.NAMING_VERSION}
    assert L.ownership("f", lab, "/fleet_f_web") == "current"
    assert L.ownership("f", lab, "/web-copy") is None  # a docker commit run under another name
    assert L.ownership("f", lab, "/fleet-f-web") is None  # today's labels never carry an old name
    assert L.ownership("g", lab, "/fleet_f_web") is None  # another fleet's
    old = {k: v for k, v in lab.items() if k != L.NAMING}
    assert L.ownership("f", old, "/fleet-f-web") == "legacy"  # made by the previous version
    assert L.ownership("f", old, "/fleet-f-host-web") is None
    hold = {L.PROJECT: "f", L.KIND: "host", L.HOST: "box"}
    assert L.ownership("f", hold, "fleet-f-host-box") == "legacy"
    assert L.ownership("f", {**hold, L.NAMING: "2"}, "fleet_f_host_box") == "current"


def test_an_old_named_container_is_replaced_with_a_clear_cause_and_warnings_reach_the_plan():
    h = host("box")
    w = agent("w", host="box")
    p = agent("p")
    d = desired(h, w, p)
    old_h = seen_host(h).model_copy(update={"legacy_name": "fleet-demo-host-box"})
    obs = observed(old_h, seen(w, host_id=old_h.id).model_copy(update={"legacy_name": "fleet-demo-w"}),
                   seen(p).model_copy(update={"legacy_name": "fleet-demo-p"}))
    obs = obs.model_copy(update={"warnings": ("container x carries fleet demo's labels but is not one fleet created; ignored",)})
    plan = reconcile(d, obs)
    ops = {a.id: (a.op, a.cause) for a in plan.actions}
    assert ops["host:box"] == ("replace", "named fleet-demo-host-box by an older fleet version; re-created under its unambiguous name")
    assert ops["agent:p"][0] == "replace" and "fleet-demo-p" in ops["agent:p"][1]
    assert ops["agent:w"][0] == "replace"
    assert plan.warnings == obs.warnings
    # a new-named record wins over an old-named duplicate (an upgrade interrupted half way)
    both = observed(seen(p), seen(p).model_copy(update={"legacy_name": "fleet-demo-p"}))
    plan = reconcile(desired(p), both)
    assert [(a.op, a.cause) for a in plan.actions] == [("destroy", "duplicate container")]
    assert plan.actions[0].observed_agent.legacy_name == "fleet-demo-p"


@pytest.mark.docker
def test_fleets_whose_old_names_collided_keep_separate_workspaces(tmp_path, docker_client, base_image, fleet_name):
    """fleet X host e-box and fleet X-e host box shared one volume; agent
    host-box and host box of one fleet wanted one container name."""
    other = f"{fleet_name}-e"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = write(tmp_path / "one", f"""\
        fleet: {fleet_name}
        hosts:
          e-box:
            image: {base_image}
          box:
            image: {base_image}
        agents:
          w:
            host: e-box
            command: ["sleep", "infinity"]
          v:
            host: box
            command: ["sleep", "infinity"]
          host-box:
            image: {base_image}
            command: ["sleep", "infinity"]
        """)
    second = write(tmp_path / "two", f"""\
        fleet: {other}
        hosts:
          box:
            image: {base_image}
        agents:
          w:
            host: box
            command: ["sleep", "infinity"]
        """)
    try:
        for path in (first, second):
            r = run_fleet("apply", "--yes", str(path))
            assert r.code == 0, r.text
        mine = docker_client.containers.get(f"fleet_{fleet_name}_w")
        theirs = docker_client.containers.get(f"fleet_{other}_w")
        assert mine.exec_run(["sh", "-c", "echo secret > /workspace/mine"]).exit_code == 0
        assert theirs.exec_run(["test", "-e", "/workspace/mine"]).exit_code == 1
        vols = {m["Name"] for c in (mine, theirs) for m in c.attrs["Mounts"] if m["Destination"] == "/workspace"}
        assert vols == {f"fleet_{fleet_name}_host_e-box_workspace", f"fleet_{other}_host_box_workspace"}
        labels = docker_client.volumes.get(f"fleet_{other}_host_box_workspace").attrs["Labels"]
        assert labels == {"dev.fleet.project": other, "dev.fleet.host": "box", "dev.fleet.kind": "workspace"}
        # agent host-box and host box of one fleet: two containers, both running
        assert docker_client.containers.get(f"fleet_{fleet_name}_host-box").status == "running"
        assert docker_client.containers.get(f"fleet_{fleet_name}_host_box").status == "running"
        assert "up to date" in run_fleet("apply", "--yes", str(first)).out
    finally:
        from tests.conftest import cleanup_fleet

        cleanup_fleet(docker_client, other)


@pytest.mark.docker
def test_a_volume_with_this_name_but_not_this_hosts_labels_is_not_mounted(tmp_path, docker_client, base_image, fleet_name):
    squat = docker_client.volumes.create(f"fleet_{fleet_name}_host_box_workspace", labels={"dev.fleet.project": fleet_name})
    try:
        path = write(tmp_path, f"""\
            fleet: {fleet_name}
            hosts:
              box:
                image: {base_image}
            agents:
              w:
                host: box
                command: ["sleep", "infinity"]
            """)
        r = run_fleet("apply", "--yes", str(path))
        assert r.code == 1 and "is not labelled as this host's workspace" in r.out, r.text
    finally:
        run_fleet("destroy", "--yes", str(path))
        squat.remove(force=True)
