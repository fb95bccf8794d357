"""Names and labels fleet stamps on what it creates: the only state fleet keeps.

Ownership rests on these: fleet touches a resource only when it carries
`dev.fleet.project=<this fleet>`.
"""

from __future__ import annotations

PREFIX = "dev.fleet."
PROJECT = PREFIX + "project"
KIND = PREFIX + "kind"
HOST = PREFIX + "host"
AGENT = PREFIX + "agent"
SPEC_HASH = PREFIX + "spec-hash"
SPEC = PREFIX + "spec"  # compact JSON of the hashed spec, so a plan can name changed keys
PORTS = PREFIX + "ports"  # agent: JSON {service: port}
MESSAGE = PREFIX + "message"  # agent: "pending" | "none" (whether a first message is due)
IMAGE_KIND = "image"  # KIND of an image fleet built from a `build:` (with PROJECT)


def agent_container(fleet: str, agent: str) -> str:
    return f"fleet-{fleet}-{agent}"


def host_container(fleet: str, host: str) -> str:
    return f"fleet-{fleet}-host-{host}"


def project_filter(fleet: str) -> str:
    return f"{PROJECT}={fleet}"


def env_name(service: str) -> str:
    """FLEET_URL_<SERVICE>: upper case, '-' to '_'."""
    return "FLEET_URL_" + service.upper().replace("-", "_")
