"""What an agent's container needs to use its grants: proxy settings and trust.

`container_setup(desired, agent)` is called by the Docker provider when it
creates an agent's container. For an agent with grants it issues the agent a
fresh proxy credential, makes sure the fleet proxy process runs and its forward
proxy listens, writes the CA bundle, and returns the environment and the
read-only bind mount to add; `bind_credential` then ties the credential to the
container once it exists. For an agent without grants it revokes any
credential the agent held before and returns nothing.

None of this is part of the agent's spec: the spec hash, labels and plans stay
free of it, and a second apply with nothing changed does not touch it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from reconciler.core.errors import FleetError
from reconciler.core.model import Desired, DesiredAgent
from reconciler.grants import agents as agentmap
from reconciler.grants import store
from reconciler.grants.catalogue import rules_for
from reconciler.grants.trust import CONTAINER_BUNDLE, ensure_bundle

PROXY_HOST = "fleet-proxy"  # /etc/hosts entry -> host-gateway, set by the Docker provider
NO_PROXY = ("localhost", "127.0.0.1", "::1", ".localhost", PROXY_HOST)
CA_VARS = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO")
READY_TIMEOUT = 15.0


def proxy_env(credential: str, port: int, user_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that sends an agent's traffic through the forward proxy
    and makes it trust the interception CA."""
    url = f"http://{agentmap.PROXY_USER}:{credential}@{PROXY_HOST}:{port}"
    user_env = user_env or {}
    extra = [x for x in (user_env.get("NO_PROXY") or user_env.get("no_proxy") or "").split(",") if x.strip()]
    no_proxy = ",".join(dict.fromkeys([*NO_PROXY, *extra]))
    env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(NO_PROXY=no_proxy, no_proxy=no_proxy)
    env.update({name: CONTAINER_BUNDLE for name in CA_VARS})
    env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 24's built-in fetch/https honour HTTPS_PROXY only with this
    return env


def ensure_forward(timeout: float = READY_TIMEOUT) -> int:
    """Make sure the fleet proxy process runs and its forward proxy listens;
    returns the port containers reach it on."""
    from reconciler.routing import daemon

    daemon.ensure_running(need=[], timeout=timeout)  # the process; no routing port needed here
    from reconciler.grants.forward import read_state

    deadline = time.monotonic() + timeout
    while True:
        pid = daemon.running_pid()
        state = read_state()
        if pid is None:
            raise FleetError(f"the fleet proxy stopped; see {daemon.log_path()}")
        if state and state.get("pid") == pid:
            if state.get("port") and state.get("listening"):
                return int(state["port"])
            if state.get("error"):
                raise FleetError(f"grants proxy: {state['error']} (set FLEET_GRANTS_PORT to use another port)")
        if time.monotonic() > deadline:
            if not state or state.get("pid") != pid:
                raise FleetError(
                    f"the running fleet proxy (pid {pid}) does not serve grants (started by an older fleet?); "
                    "restart it: `fleet proxy stop`, then `fleet apply`"
                )
            raise FleetError(f"the grants proxy did not start listening within {timeout:g}s; see {daemon.log_path()}")
        time.sleep(0.05)


def container_setup(desired: Desired, agent: DesiredAgent) -> tuple[dict[str, str], dict[str, Any]]:
    """(environment, binds) to add to `agent`'s container; both empty without grants."""
    fleet = desired.fleet
    if not agent.grants:
        agentmap.forget(fleet, agent.name)
        return {}, {}
    gone = store.missing(agent.grants)
    if gone:
        raise FleetError(f"grants not stored: {', '.join(gone)}; set them with " + ", ".join(f"`fleet grant set {g}`" for g in gone))
    rules = rules_for(agent.grants, desired.grants)
    bundle = ensure_bundle()
    agentmap.prune(fleet, keep=[a.name for a in desired.agents.values() if a.grants])
    credential = agentmap.issue(fleet, agent.name, agent.grants, rules)
    port = ensure_forward()
    binds = {str(bundle): {"bind": CONTAINER_BUNDLE, "mode": "ro"}}
    return proxy_env(credential, port, agent.env), binds


def bind_credential(fleet: str, agent: str, container_id: str) -> None:
    """Bind the credential just issued to `agent` to its new container (before
    it starts): the forward proxy accepts it from that container only."""
    if not agentmap.bind(fleet, agent, container_id):
        raise FleetError(f"agent {agent}: its proxy credential vanished before its container started; run `fleet apply` again")
