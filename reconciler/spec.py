"""The schema of fleet.yaml (version 1), as pydantic models.

These models describe the file as written; `load.py` turns them into the resolved
`Desired` of `model.py`. The JSON Schema in `schemas/fleet.schema.json` is generated
from `FleetFile`, so editors check exactly what `fleet validate` checks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic_core import PydanticCustomError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63, strict=True)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]


def _env_value(value: Any) -> Any:
    """Env values may be written as numbers or booleans (`PORT: 3000`); Docker
    Compose turns them into strings, and so does fleet. Lists and maps stay
    wrong."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _no_nul(value: str) -> str:
    """A NUL cannot cross exec(2) or the engine's API: the container would be
    created and then never start. Refused here, where the file says it."""
    if "\0" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character (\\0); the engine refuses it")
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value), StringConstraints(strict=True), AfterValidator(_no_nul)]
EnvKey = Annotated[str, StringConstraints(pattern=ENV_KEY, strict=True)]
Env = dict[EnvKey, EnvValue]
Str = Annotated[str, StringConstraints(strict=True, min_length=1), AfterValidator(_no_nul)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Build(Model):
    """Build the image from a Dockerfile; its tag comes from a hash of the context."""

    context: Str = Field(default=".", description="Directory sent to the build, relative to fleet.yaml.")
    dockerfile: Str = Field(default="Dockerfile", description="Dockerfile path inside the context.")
    args: Env = Field(default_factory=dict, description="Build arguments.")


class WorkspaceMap(Model):
    path: Str = Field(description="Host directory, relative to fleet.yaml.")
    mode: Literal["shared", "copy", "worktree"] = Field(
        default="shared",
        description="shared: mount the directory itself; copy: a private copy per agent; "
        "worktree: a git worktree per agent on its own branch.",
    )
    branch: Str | None = Field(default=None, description="worktree mode: the branch (default fleet/<agent>).")


Workspace = Union[Str, WorkspaceMap]
Command = Union[Annotated[list[Str], Field(min_length=1)], Str]


class Defaults(Model):
    """Merged under every agent (an agent's own value wins; env is merged key by key)."""

    image: Str | None = None
    build: Build | None = None
    command: Command | None = None
    env: Env = Field(default_factory=dict)
    grants: list[Name] = Field(default_factory=list)
    restart: Literal["always", "on-failure", "never"] | None = None


class Proxy(Model):
    port: Port = Field(default=8080, description="One port serves HTTP and HTTPS.")
    bind: Str = Field(default="127.0.0.1", description="Address the routing proxy listens on.")
    tls: bool = Field(default=True, description="Advertise https URLs (the port serves both).")


class Host(Model):
    """A host agents can share: same working directory, same network, one bill."""

    provider: Literal["docker", "modal"] = "docker"
    image: Str | None = None
    build: Build | None = None
    workspace: Workspace | None = None
    env: Env = Field(default_factory=dict)
    # modal only
    app: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9._-]{1,63}$")] | None = Field(
        default=None, description="modal: app name (default fleet-<fleet>); letters, digits, '.', '_', '-', at most 63."
    )
    environment: Str | None = Field(default=None, description="modal: environment name.")
    idle_timeout: Annotated[int, Field(strict=True, ge=1, le=86400)] | None = Field(
        default=None, description="modal: seconds of inactivity before the sandbox stops."
    )
    timeout: Annotated[int, Field(strict=True, ge=1, le=86400)] | None = Field(
        default=None, description="modal: sandbox lifetime in seconds (at most 24 h)."
    )
    cpu: Annotated[float, Field(gt=0, le=64)] | None = None
    memory: Annotated[int, Field(strict=True, ge=128)] | None = Field(default=None, description="modal: MiB.")
    region: Str | None = None
    restore: Literal["latest"] | None = Field(
        default=None, description="modal: start a re-created host from its last snapshot."
    )


class Agent(Model):
    """A process with its own lifecycle inside a host."""

    host: Name | None = Field(default=None, description="A host from `hosts:`; omitted: a private host.")
    image: Str | None = None
    build: Build | None = None
    workspace: Workspace | None = None
    command: Command | None = Field(default=None, description="A list, or a string run by /bin/sh -c.")
    message: Str | None = Field(default=None, description="First message, typed into the agent once it starts.")
    env: Env = Field(default_factory=dict)
    ports: dict[Name, Port] = Field(default_factory=dict, description="Service name -> container port.")
    grants: list[Name] = Field(default_factory=list)
    restart: Literal["always", "on-failure", "never"] | None = None
    enabled: bool = Field(default=True, description="false: keep it in the file but not running.")


class GrantDef(Model):
    """A user-defined grant: which hosts get which header."""

    hosts: Annotated[list[Str], Field(min_length=1)]
    header: Str = "Authorization"
    value: Str = "Bearer {token}"


class FleetFile(Model):
    """fleet.yaml, schema version 1."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="fleet.yaml",
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            # `x-...` keys are free-form (as in Docker Compose), e.g. to hold YAML anchors
            "patternProperties": {"^x-": {}},
        },
    )

    fleet: Name = Field(description="The fleet's name; scopes every resource it creates.")
    version: Literal[1] = 1
    defaults: Defaults = Field(default_factory=Defaults)
    proxy: Proxy = Field(default_factory=Proxy)
    hosts: dict[Name, Host] = Field(default_factory=dict)
    agents: dict[Name, Agent] = Field(default_factory=dict)
    grants: dict[Name, GrantDef] = Field(default_factory=dict)


def json_schema() -> dict[str, Any]:
    return FleetFile.model_json_schema()
