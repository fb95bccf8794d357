"""Names and labels fleet stamps on what it creates: the only state fleet keeps.

Ownership rests on two facts together: the labels (`dev.fleet.project=<fleet>`,
kind, host/agent) and the exact name fleet gave the container. Labels alone can
be copied (`docker commit` of an agent carries them), a name is unique per
engine: so a container is fleet's only when its name is the one its labels imply.

Names join their parts with `_`, a character a DNS label (every fleet, host and
agent name) cannot contain, and put a fixed word where the kind differs, so no
two resources of any fleets can want the same name:

    agent container      fleet_<fleet>_<agent>
    host holder          fleet_<fleet>_host_<host>
    host workspace vol.  fleet_<fleet>_host_<host>_workspace
    build image          fleet_<fleet>_build:<hash>
    shared network       fleet_agents  (one per engine, all fleets)

Split on `_`, an agent name has 3 parts, a host name 4, a volume 5; the parts
are the fleet and resource names themselves, so the map is injective.
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
# The naming scheme a container was created under. Containers made before it
# existed have no such label; only those may carry an old (pre-"_") name.
NAMING = PREFIX + "naming"
NAMING_VERSION = "2"
NETWORK_LABEL = PREFIX + "network"  # on the shared network: "agents"
# the `engine:` a host or agent was created for, when not the local engine: an
# engine observes only what was made for it, so one daemon reached under two
# addresses (or as both the local and a named engine) never sees a resource twice
ENGINE = PREFIX + "engine"

NETWORK = "fleet_agents"  # one bridge per engine, inter-container traffic off


def agent_container(fleet: str, agent: str) -> str:
    return f"fleet_{fleet}_{agent}"


def host_container(fleet: str, host: str) -> str:
    return f"fleet_{fleet}_host_{host}"


def workspace_volume(fleet: str, host: str) -> str:
    return f"fleet_{fleet}_host_{host}_workspace"


def build_image(fleet: str, digest: str) -> str:
    return f"fleet_{fleet}_build:{digest[:16]}"


# ----------------------------------------------------------------- the names before version 2
# Joined with '-', so ambiguous between fleets; recognised only to upgrade.


def legacy_agent_container(fleet: str, agent: str) -> str:
    return f"fleet-{fleet}-{agent}"


def legacy_host_container(fleet: str, host: str) -> str:
    return f"fleet-{fleet}-host-{host}"


def legacy_workspace_volume(fleet: str, host: str) -> str:
    return f"fleet-{fleet}-{host}-workspace"


def expected_name(fleet: str, labels: dict[str, str]) -> str | None:
    """The name fleet gives the container these labels describe (None: the
    labels describe nothing fleet creates)."""
    kind = labels.get(KIND)
    if kind == "agent" and labels.get(AGENT):
        return agent_container(fleet, labels[AGENT])
    if kind == "host" and labels.get(HOST):
        return host_container(fleet, labels[HOST])
    return None


def ownership(fleet: str, labels: dict[str, str], name: str) -> str | None:
    """"current" when fleet created this container under today's names,
    "legacy" when an older fleet did (old name, no naming label), None when it
    is not fleet's, whatever its labels say (a copy, a container run by hand)."""
    if labels.get(PROJECT) != fleet:
        return None
    name = name.lstrip("/")
    if name == expected_name(fleet, labels):
        return "current"
    if labels.get(NAMING):
        return None  # today's labels under another name: a copy
    kind = labels.get(KIND)
    if kind == "agent" and labels.get(AGENT) and name == legacy_agent_container(fleet, labels[AGENT]):
        return "legacy"
    if kind == "host" and labels.get(HOST) and name == legacy_host_container(fleet, labels[HOST]):
        return "legacy"
    return None


def project_filter(fleet: str) -> str:
    return f"{PROJECT}={fleet}"


def env_name(service: str) -> str:
    """FLEET_URL_<SERVICE>: upper case, '-' to '_'."""
    return "FLEET_URL_" + service.upper().replace("-", "_")
