"""What a Docker create or start produced, as an `Outcome` for the executor:
the container's id, state, published ports and bridge address, read from one
inspect of that container right after it started (published ports exist only
then). The route action reads them instead of observing the fleet again."""

from __future__ import annotations

from typing import Any

from reconciler.core.outcome import Outcome

STATES = ("created", "running", "restarting", "paused", "exited", "dead", "removing")


def from_inspect(info: dict[str, Any]) -> Outcome:
    net = info.get("NetworkSettings") or {}
    ports: dict[int, int] = {}
    for key, binds in (net.get("Ports") or {}).items():
        port, _, proto = str(key).partition("/")
        if proto != "tcp" or not binds or not port.isdigit():
            continue
        host_port = next((b.get("HostPort") for b in binds if str(b.get("HostPort") or "").isdigit()), None)
        if host_port is not None:
            ports[int(port)] = int(host_port)
    nets = net.get("Networks") or {}
    address = next((str(nets[n]["IPAddress"]) for n in sorted(nets) if (nets[n] or {}).get("IPAddress")), None)
    status = (info.get("State") or {}).get("Status")
    return Outcome(id=info.get("Id"), state=status if status in STATES else "running", ports=ports, address=address)


def outcome(api: Any, container_id: str) -> Outcome:
    """Inspect the container just created or started."""
    return from_inspect(api.inspect_container(container_id))
