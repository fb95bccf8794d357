"""`fleet status` and `fleet ls` rows are typed, frozen records whose JSON is
exactly the documented one (keys, order, values)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from reconciler.engine.fleets import FleetRow, Resource, summarise
from reconciler.view.status import PortRow, StatusRow, state_text, status_rows
from tests.gitops.test_output import world

STATUS_KEYS = ["agent", "host", "provider", "state", "outdated", "in_file", "enabled", "stopped_by_user", "exit_code",
               "restarts", "started_at", "message", "urls", "branch", "ports", "created", "id"]


def test_status_rows_are_typed_and_their_json_keeps_its_keys_and_order():
    desired, observed = world()
    rows = status_rows(desired, observed)
    assert rows and all(isinstance(r, StatusRow) for r in rows)
    by = {r.agent: r for r in rows}
    assert (by["crashed"].state, by["crashed"].exit_code, state_text(by["crashed"])) == ("exited", 137, "exited (137)")
    assert by["joiner"].host == "pod" and by["new"].id is None
    doc = by["changed"].as_json()
    assert list(doc) == STATUS_KEYS
    assert json.dumps(doc) == json.dumps({
        "agent": "changed", "host": None, "provider": "docker", "state": "running", "outdated": True, "in_file": True,
        "enabled": True, "stopped_by_user": False, "exit_code": None, "restarts": None, "started_at": None,
        "message": None, "urls": {}, "branch": None, "ports": [], "created": "2026-01-01T00:00:00Z",
        "id": "changed00000",
    })
    port = PortRow(service="web", container_port=3000, host_port=None, address="172.18.0.5:3000")
    assert list(port.model_dump(mode="json")) == ["service", "container_port", "host_port", "address"]
    with pytest.raises(ValidationError):
        by["changed"].state = "exited"  # type: ignore[misc]
    with pytest.raises(TypeError):
        by["changed"].urls["web"] = "http://evil"  # type: ignore[index]


def test_fleet_ls_rows_count_agents_hosts_and_states_per_fleet():
    def res(fleet: str, kind: str, name: str, state: str, provider: str = "docker") -> Resource:
        return Resource(fleet=fleet, kind=kind, name=name, state=state, provider=provider)  # type: ignore[arg-type]

    rows = summarise([
        res("b", "agent", "x", "running"), res("a", "host", "h", "running", "modal"),
        res("a", "agent", "y", "exited", "modal"), res("a", "agent", "z", "running"), res("a", "agent", "w", "exited"),
    ])
    assert [r.fleet for r in rows] == ["a", "b"] and all(isinstance(r, FleetRow) for r in rows)
    assert rows[0].as_json() == {"fleet": "a", "agents": 3, "hosts": 1, "states": {"exited": 2, "running": 1},
                                 "providers": ["docker", "modal"], "running": 1}
    assert list(rows[0].as_json()) == ["fleet", "agents", "hosts", "states", "providers", "running"]
    assert rows[1].as_json() == {"fleet": "b", "agents": 1, "hosts": 0, "states": {"running": 1},
                                 "providers": ["docker"], "running": 1}
