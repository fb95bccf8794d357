"""The `capabilities:` key: resolved per agent (a host's go to each of its
agents), part of the spec hash only when set, and named in the plan."""

from __future__ import annotations

import textwrap

from reconciler.load.loader import load
from reconciler.core.reconcile import reconcile
from tests.unit.builders import agent, desired, observed, seen


def test_capabilities_resolve_sorted_and_merge_a_hosts_into_its_agents(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent("""\
        fleet: f
        hosts:
          box: {image: img, capabilities: [SYS_PTRACE]}
        agents:
          a: {image: img, capabilities: [NET_RAW, CHOWN, NET_RAW]}
          b: {host: box, capabilities: [NET_RAW]}
          c: {host: box}
          d: {image: img}
        """))
    d = load(path)
    assert d.agents["a"].capabilities == ("CHOWN", "NET_RAW")
    assert d.agents["b"].capabilities == ("NET_RAW", "SYS_PTRACE")
    assert d.agents["c"].capabilities == ("SYS_PTRACE",)
    assert d.agents["d"].capabilities == () and "capabilities" not in d.agents["d"].spec()
    assert d.agents["a"].spec()["capabilities"] == ["CHOWN", "NET_RAW"]


def test_the_plan_names_a_capability_given_back():
    a = agent("a").model_copy(update={"capabilities": ("NET_RAW",)})
    j = agent("j", host="h").model_copy(update={"capabilities": ("NET_ADMIN", "NET_RAW")})
    from tests.unit.builders import host

    plan = reconcile(desired(a, j, host("h")), observed())
    causes = {x.id: x.cause for x in plan.actions}
    assert causes["agent:a"] == "no container; with capability NET_RAW"
    assert causes["agent:j"] == "not on host h; with capabilities NET_ADMIN, NET_RAW"
    # adding one to a running agent replaces it, and the change says which
    plan = reconcile(desired(a), observed(seen(agent("a"))))
    (act,) = plan.actions
    assert act.op == "replace" and act.cause == "spec changed: capabilities"
    assert [(c.key, c.before, c.after) for c in act.changes] == [("capabilities", None, ["NET_RAW"])]
    # an agent without any keeps the hash it had before the key existed
    assert "capabilities" not in agent("a").spec()
