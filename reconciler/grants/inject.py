"""What an agent's container needs to use its grants: proxy settings and trust.

The plan's `credentials issue` action (engine/handlers_grants.py) issues an
agent a fresh credential (`issue_credential`), makes sure the proxy process
runs (the engine starts it: `grants` never imports `routing`) and waits for its
forward proxy (`forward_port`), and hands the create the environment
(`proxy_env`) and the read-only CA bundle (`container_binds`) to add;
`bind_credential` then ties the credential to the container once it exists.
`credentials revoke` calls `revoke`.

None of this is part of the agent's spec: the spec hash and labels stay free
of it, and an apply with nothing to change issues nothing.
"""

from __future__ import annotations

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


def proxy_env(credential: str, port: int, user_env: Mapping[str, str] | None = None,
              proxy_host: str = PROXY_HOST) -> dict[str, str]:
    """The environment that sends an agent's traffic through the forward proxy
    (at `proxy_host`: a Modal agent's is its host's relay on 127.0.0.1) and
    makes it trust the interception CA."""
    url = f"http://{agentmap.PROXY_USER}:{credential}@{proxy_host}:{port}"
    user_env = user_env or {}
    extra = [x for x in (user_env.get("NO_PROXY") or user_env.get("no_proxy") or "").split(",") if x.strip()]
    no_proxy = ",".join(dict.fromkeys([*NO_PROXY, *extra]))
    env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    env.update(NO_PROXY=no_proxy, no_proxy=no_proxy)
    env.update({name: CONTAINER_BUNDLE for name in CA_VARS})
    env["NODE_USE_ENV_PROXY"] = "1"  # Node >= 24's built-in fetch/https honour HTTPS_PROXY only with this
    return env


def issue_credential(desired: Desired, agent: DesiredAgent) -> str:
    """A fresh credential for `agent` (it has grants), recorded with the rules
    of its grants; the grants must be stored."""
    gone = store.missing(agent.grants)
    if gone:
        raise FleetError(f"grants not stored: {', '.join(gone)}; set them with " + ", ".join(f"`fleet grant set {g}`" for g in gone))
    rules = rules_for(agent.grants, desired.grants)
    return agentmap.issue(desired.fleet, agent.name, agent.grants, rules)


def container_binds() -> dict[str, Any]:
    """The read-only CA bundle (this machine's CAs, the routing and the
    interception CA) an agent with grants mounts."""
    bundle = ensure_bundle()
    return {str(bundle): {"bind": CONTAINER_BUNDLE, "mode": "ro"}}


def revoke(fleet: str, agent: str) -> bool:
    """Revoke `fleet/agent`'s credential; False when it held none."""
    return agentmap.forget(fleet, agent)


def forward_port(pid: int) -> int | None:
    """The port the forward proxy of the proxy process `pid` listens on, once it
    does (None: not yet); raises when it reported an error."""
    from reconciler.grants.forward import read_state

    state = read_state()
    if state and state.get("pid") == pid:
        if state.get("port") and state.get("listening"):
            return int(state["port"])
        if state.get("error"):
            raise FleetError(f"grants proxy: {state['error']} (set FLEET_GRANTS_PORT to use another port)")
    return None


def serves_grants(pid: int) -> bool:
    """The proxy process `pid` has written forward-proxy state (an older fleet's does not)."""
    from reconciler.grants.forward import read_state

    state = read_state()
    return state is not None and state.get("pid") == pid


def bind_credential(fleet: str, agent: str, container_id: str) -> None:
    """Bind the credential just issued to `agent` to its new container (before
    it starts): the forward proxy accepts it from that container only."""
    if not agentmap.bind(fleet, agent, container_id):
        raise FleetError(f"agent {agent}: its proxy credential vanished before its container started; run `fleet apply` again")
