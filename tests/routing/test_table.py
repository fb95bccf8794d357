"""The route table: atomic writes, collisions between fleets, derivation from models."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from reconciler.core.errors import FleetError
from reconciler.core.model import (
    Desired,
    DesiredAgent,
    DesiredHost,
    ImageRef,
    Observed,
    ObservedAgent,
    ObservedHost,
    ProxySettings,
)
from reconciler.routing.table import (
    Listen,
    Route,
    add_listen,
    agent_urls,
    read_table,
    remove_fleet,
    routes_for,
    set_fleet_routes,
    table_path,
    url_env,
)

IMG = ImageRef(ref="fleet-base:bookworm")


def r(agent: str, service: str = "web", port: int = 3000, target: str = "http://127.0.0.1:40000") -> Route:
    return Route(agent=agent, service=service, container_port=port, target=target)


def test_empty_table_when_no_file():
    t = read_table()
    assert t.fleets == {} and t.listen == ()


def test_write_is_atomic_and_versioned(fleet_home: Path):
    set_fleet_routes("app", [Listen(port=8080)], [r("dark-mode"), r("checkout", target="http://127.0.0.1:40001")])
    data = json.loads(table_path().read_text())
    assert data["version"] == 1
    entry = data["fleets"]["app"]
    assert entry["listen"] == [{"port": 8080, "bind": "127.0.0.1"}]
    assert [x["agent"] for x in entry["routes"]] == ["checkout", "dark-mode"]
    assert entry["routes"][1] == {
        "agent": "dark-mode",
        "service": "web",
        "container_port": 3000,
        "target": "http://127.0.0.1:40000",
        "tls": True,
    }
    assert not [p for p in fleet_home.iterdir() if p.name.endswith(".tmp")]
    inode = table_path().stat().st_ino
    set_fleet_routes("app", [8080], [r("dark-mode", target="http://127.0.0.1:40009")])
    assert table_path().stat().st_ino != inode  # replaced by rename, never rewritten in place
    assert read_table().fleets["app"].routes[0].target == "http://127.0.0.1:40009"


def test_unchanged_entry_is_not_rewritten():
    set_fleet_routes("app", [8080], [r("a")])
    before = table_path().stat().st_mtime_ns, table_path().stat().st_ino
    set_fleet_routes("app", [8080], [r("a")])
    assert (table_path().stat().st_mtime_ns, table_path().stat().st_ino) == before


def test_concurrent_writers_lose_nothing():
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for j in range(5):
                set_fleet_routes(f"f{i}", [8000 + i], [r(f"a{i}", target=f"http://127.0.0.1:{41000 + j}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    table = read_table()
    assert sorted(table.fleets) == [f"f{i}" for i in range(6)]
    assert all(e.routes[0].target == "http://127.0.0.1:41004" for e in table.fleets.values())


def test_collision_between_fleets_is_refused_naming_the_other():
    set_fleet_routes("alpha", [8080], [r("web-agent")])
    with pytest.raises(FleetError, match=r"web\.web-agent\.localhost:8080 is already routed by fleet alpha"):
        set_fleet_routes("beta", [8080], [r("web-agent", target="http://127.0.0.1:40002")])
    assert "beta" not in read_table().fleets  # nothing changed
    # the same names on another proxy port do not collide
    set_fleet_routes("beta", [8081], [r("web-agent", target="http://127.0.0.1:40002")])
    # different agents share a port happily
    set_fleet_routes("gamma", [8080], [r("other")])
    assert sorted(read_table().fleets) == ["alpha", "beta", "gamma"]


def test_alias_collision_is_refused():
    set_fleet_routes("alpha", [8080], [r("solo", "web")])
    with pytest.raises(FleetError, match=r"solo\.localhost:8080 is already routed by fleet alpha"):
        set_fleet_routes("beta", [8080], [r("solo", "api")])


def test_port_bound_elsewhere_is_refused():
    set_fleet_routes("alpha", [Listen(port=8080, bind="0.0.0.0")], [r("a")])
    with pytest.raises(FleetError, match="bound to 0.0.0.0 by fleet alpha"):
        set_fleet_routes("beta", [Listen(port=8080, bind="127.0.0.1")], [r("b")])


def test_keep_agents_keeps_routes_until_the_agent_is_gone():
    set_fleet_routes("app", [8080], [r("a"), r("b", target="http://127.0.0.1:40005")])
    # b exists but is restarting: its route stays
    set_fleet_routes("app", [8080], [r("a")], keep_agents={"b"})
    assert [x.agent for x in read_table().fleets["app"].routes] == ["a", "b"]
    # b is gone
    set_fleet_routes("app", [8080], [r("a")])
    assert [x.agent for x in read_table().fleets["app"].routes] == ["a"]


def test_remove_fleet_and_extra_listen():
    set_fleet_routes("app", [8080], [r("a")])
    add_listen(9000)
    add_listen(9000)
    t = read_table()
    assert [x.port for x in t.listen] == [9000]
    assert [x.port for x in t.listen_addresses()] == [8080, 9000]
    remove_fleet("app")
    remove_fleet("app")
    t = read_table()
    assert t.fleets == {} and [x.port for x in t.listen_addresses()] == [9000]


def test_hostnames_index():
    set_fleet_routes("app", [8080], [r("multi", "web"), r("multi", "api", 8000), r("solo", "web")])
    add_listen(9000)
    t = read_table()
    names = t.hostnames(8080)
    assert set(names) == {"web.multi.localhost", "api.multi.localhost", "web.solo.localhost", "solo.localhost"}
    assert names["solo.localhost"][1].agent == "solo"
    assert set(t.hostnames(9000)) == set(names)  # an extra port serves every fleet
    assert t.hostnames(7000) == {}


def test_corrupt_table_gives_a_clear_error():
    table_path().parent.mkdir(parents=True, exist_ok=True)
    table_path().write_text("{not json")
    with pytest.raises(FleetError, match="routes.json is not valid JSON"):
        read_table()
    table_path().write_text(json.dumps({"version": 99, "fleets": {}}))
    with pytest.raises(FleetError, match="version 99"):
        set_fleet_routes("app", [8080], [])


def test_target_must_be_a_url():
    with pytest.raises(ValueError):
        Route(agent="a", service="web", container_port=1, target="127.0.0.1:80")


# -- routes_for on hand-built models ------------------------------------------------------


def _desired() -> Desired:
    return Desired(
        fleet="app",
        file=Path("/tmp/fleet.yaml"),
        hosts={
            "pod": DesiredHost(name="pod", image=IMG, ports=(3000, 8000)),
            "remote": DesiredHost(name="remote", provider="modal", image=IMG, ports=(3000,)),
        },
        agents={
            "dark-mode": DesiredAgent(name="dark-mode", image=IMG, ports={"web": 3000, "api": 8000}),
            "checkout": DesiredAgent(name="checkout", image=IMG, ports={"web": 3000}),
            "stopped": DesiredAgent(name="stopped", image=IMG, ports={"web": 3000}),
            "quiet": DesiredAgent(name="quiet", image=IMG),
            "impl": DesiredAgent(name="impl", host="pod", image=IMG, ports={"web": 3000}),
            "tests": DesiredAgent(name="tests", host="pod", image=IMG, ports={"api": 8000}),
            "jwt": DesiredAgent(name="jwt", host="remote", provider="modal", image=IMG, ports={"web": 3000}),
            "down-host": DesiredAgent(name="down-host", host="gone", image=IMG, ports={"web": 3000}),
        },
        proxy=ProxySettings(port=8443, tls=True),
    )


def _agent(name: str, state: str = "running", host: str | None = None, ports: dict | None = None, provider="docker"):
    return ObservedAgent(name=name, host=host, provider=provider, id=f"id-{name}", state=state, spec_hash="x", ports=ports or {})


def test_routes_for_private_shared_and_modal_agents():
    observed = Observed(
        fleet="app",
        hosts=(
            ObservedHost(name="pod", provider="docker", id="h1", state="running", spec_hash="y", ports={3000: 49001, 8000: 49002}),
            ObservedHost(
                name="remote", provider="modal", id="sb-1", state="running", spec_hash="z",
                urls={3000: "https://abc123.r5.modal.host"},
            ),
        ),
        agents=(
            _agent("dark-mode", ports={3000: 49153, 8000: 49154}),
            _agent("checkout", ports={3000: 49155}),
            _agent("stopped", state="exited", ports={3000: 49156}),
            _agent("quiet"),
            _agent("impl", host="pod"),
            _agent("tests", host="pod"),
            _agent("jwt", host="remote", provider="modal"),
            _agent("down-host", host="gone"),
            _agent("not-desired", ports={3000: 49999}),
        ),
    )
    got = {(x.agent, x.service): x for x in routes_for(_desired(), observed)}
    assert {k: v.target for k, v in got.items()} == {
        ("checkout", "web"): "http://127.0.0.1:49155",
        ("dark-mode", "api"): "http://127.0.0.1:49154",
        ("dark-mode", "web"): "http://127.0.0.1:49153",
        ("impl", "web"): "http://127.0.0.1:49001",
        ("tests", "api"): "http://127.0.0.1:49002",
        ("jwt", "web"): "https://abc123.r5.modal.host",
    }
    assert got[("dark-mode", "api")].container_port == 8000
    assert all(x.tls for x in got.values())


def test_routes_for_skips_agents_of_a_stopped_host():
    observed = Observed(
        fleet="app",
        hosts=(ObservedHost(name="pod", provider="docker", id="h1", state="exited", spec_hash="y", ports={3000: 49001}),),
        agents=(_agent("impl", host="pod"),),
    )
    assert routes_for(_desired(), observed) == []


def test_agent_urls_and_env():
    agent = _desired().agents["dark-mode"]
    assert agent_urls(agent, ProxySettings(port=8080)) == {
        "api": "https://api.dark-mode.localhost:8080",
        "web": "https://web.dark-mode.localhost:8080",
    }
    assert agent_urls(agent, ProxySettings(port=9000, tls=False))["web"] == "http://web.dark-mode.localhost:9000"
    multi = DesiredAgent(name="x", image=IMG, ports={"my-web": 3000})
    assert url_env(multi, ProxySettings()) == {"FLEET_URL_MY_WEB": "https://my-web.x.localhost:8080"}
