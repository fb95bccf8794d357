"""The route action reads the execution state: the routes of a plan's new
agents come from what their create returned (the published port), with no
observation in the middle of the plan. Real route table, real proxy process,
real HTTP; the provider is a stand-in at the Provider boundary that reports
the port a real backend listens on, and refuses to be observed."""

from __future__ import annotations

import pytest

from reconciler.core.model import ProxySettings
from reconciler.core.outcome import Outcome
from reconciler.core.plan import AgentCreate, RouteUpdate
from reconciler.core.reconcile import reconcile
from reconciler.engine.execute import execute
from reconciler.routing import table
from tests.conftest import free_port
from tests.routing.helpers import Backend, get_json
from tests.unit.builders import agent, desired, observed

pytestmark = pytest.mark.timeout(60)


class ReportingProvider:
    """Creates nothing; reports the backend's port as the new container's published port."""

    name = "docker"

    def __init__(self, port: int):
        self.port = port
        self.created: list[str] = []

    def observe(self, fleet):  # pragma: no cover - the point: never called
        raise AssertionError("observed in the middle of a plan")

    def create_agent(self, desired, agent, extras=None):
        self.created.append(agent.name)
        return Outcome(id=f"{agent.name:x<64}", ports={3000: self.port})


def test_new_agents_are_routed_from_what_their_create_returned():
    backend = Backend("A")
    try:
        d = desired(agent("web", ports={"http": 3000}), agent("quiet"))
        d = d.model_copy(update={"proxy": ProxySettings(port=free_port(), tls=False)})
        plan = reconcile(d, observed(fleet=d.fleet))
        assert [type(a) for a in plan.actions] == [AgentCreate, AgentCreate, RouteUpdate]
        provider = ReportingProvider(backend.port)
        result = execute(d, plan, observed=observed(fleet=d.fleet), provider_of=lambda name: provider)  # type: ignore[arg-type,return-value]
        assert result.ok, (result.failed, result.skipped)
        assert sorted(provider.created) == ["quiet", "web"]
        assert result.outcomes["agent:web"].ports == {3000: backend.port}
        (route,) = table.read_table().fleets[d.fleet].routes
        assert (route.agent, route.target) == ("web", backend.url)
        assert get_json("http.web.localhost", d.proxy.port)["backend"] == "A"
    finally:
        backend.stop()


def test_a_route_action_without_the_plans_observation_fails_clearly():
    d = desired(agent("web", ports={"http": 3000}))
    result = execute(d, reconcile(d, observed()).model_copy(update={"actions": (RouteUpdate(cause="test"),)}))
    assert "needs the plan's observation" in result.failed["route:routes"]
