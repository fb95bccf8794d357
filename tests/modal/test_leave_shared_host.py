"""An agent with a port leaves a Modal shared host (the fake control plane, real
containers): the apply succeeds (the agent goes before its host is snapshotted
and re-created, never an exec into a paused sandbox), its URL answers 404 at
once, and a route left behind by an earlier failed apply is removed by the next
one instead of "up to date" with a URL answering 502."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.modal.helpers import curl, fleet, fleet_yaml, terminate_fleet, wait_for

pytestmark = pytest.mark.docker


def test_removing_an_agent_with_a_port_from_a_modal_host_converges(fake_modal, fleet_name, tmp_path, fleet_home):
    from reconciler.routing import table

    env = fake_modal.env()
    ws = tmp_path / "app"
    ws.mkdir()
    port = free_port()
    path = tmp_path / "fleet.yaml"
    path.write_text(fleet_yaml(fleet_name, port, ws, test_env="ports: {api: 3001}"))
    try:
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        text = path.read_text()
        path.write_text(text[: text.index("  impl-agent:")] + text[text.index("  test-agent:"):])

        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0, r.text
        assert "destroy  agent impl-agent" in r.out and "failed" not in r.out and "paused" not in r.text, r.text
        # (the proxy reloads its table within a moment; apply waiting for it is another change)
        wait_for(lambda: curl(f"https://web.impl-agent.localhost:{port}/", fleet_home)[0] == 404, what="404", timeout=5)
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text

        # a route of a gone agent left in the table (as a skipped route action leaves it)
        entry = table.read_table().fleets[fleet_name]
        stale = entry.routes[0].model_copy(update={"agent": "impl-agent", "service": "web", "target": "https://127.0.0.1:9"})
        table.set_fleet_routes(fleet_name, entry.listen, list(entry.routes) + [stale])
        wait_for(lambda: curl(f"https://web.impl-agent.localhost:{port}/", fleet_home)[0] == 502, what="stale route served")
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "route table out of date" in r.out, r.text
        wait_for(lambda: curl(f"https://web.impl-agent.localhost:{port}/", fleet_home)[0] == 404, what="404", timeout=5)
        r = fleet("apply", "-f", str(path), env=env)
        assert r.code == 0 and "up to date" in r.out, r.text
    finally:
        terminate_fleet(fake_modal, fleet_name)
