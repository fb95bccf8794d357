"""The schema of fleet.yaml (version 1), as pydantic models.

These models describe the file as written; `resolve.py` turns them into the resolved
`Desired` of `core/model.py`. The JSON Schema in `schemas/fleet.schema.json` is generated
from `FleetFile` (see `schemajson.py`), so editors check what `fleet validate` checks.
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
    WithJsonSchema,
)

from reconciler.core import capabilities as caps

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_KEY = r"^[A-Za-z_][A-Za-z0-9_]*$"
BUILTIN_GRANTS = ("anthropic", "github", "gitlab", "npm", "openai")
# host keys that only mean something to provider: modal
MODAL_ONLY = ("app", "environment", "idle_timeout", "timeout", "cpu", "memory", "region", "restore")

NAME_MESSAGE = "a lowercase DNS label: a-z, 0-9 and '-', starting and ending with a letter or digit, at most 63 characters"
ENV_KEY_MESSAGE = "an environment variable name: letters, digits and '_', not starting with a digit"

Name = Annotated[
    str,
    StringConstraints(pattern=DNS_LABEL, max_length=63, strict=True),
    Field(json_schema_extra={"patternErrorMessage": f"must be {NAME_MESSAGE}"}),
]
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


NO_NUL = "^[^\\u0000]*$"  # the JSON Schema spelling of _no_nul


def _no_nul(value: str) -> str:
    """A NUL cannot cross exec(2) or the engine's API: the container would be
    created and then never start. Refused here, where the file says it."""
    if "\0" in value:
        raise PydanticCustomError("nul_character", "must not contain a NUL character (\\0); the engine refuses it")
    return value


EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    StringConstraints(strict=True),
    AfterValidator(_no_nul),
    WithJsonSchema(
        {
            "type": ["string", "number", "boolean"],
            "pattern": NO_NUL,
            "description": "A string; numbers and booleans are written as strings (true -> 'true').",
            "examples": ["development", 3000, True],
        }
    ),
]
EnvKey = Annotated[
    str,
    StringConstraints(pattern=ENV_KEY, strict=True),
    Field(json_schema_extra={"patternErrorMessage": f"must be {ENV_KEY_MESSAGE}"}),
]
Env = dict[EnvKey, EnvValue]
Str = Annotated[
    str, StringConstraints(strict=True, min_length=1), AfterValidator(_no_nul),
    Field(json_schema_extra={"pattern": NO_NUL, "patternErrorMessage": "must not contain a NUL character"}),
]
Capability = Annotated[
    str, BeforeValidator(caps.validate), StringConstraints(strict=True),
    WithJsonSchema({"type": "string", "enum": list(caps.KNOWN)}),
]
Capabilities = Annotated[
    list[Capability],
    Field(description="Linux capabilities given back to the container (fleet drops NET_RAW and sets "
          "no-new-privileges), as in capabilities(7) without CAP_, e.g. [NET_RAW]."),
]

# one schema, not an anyOf: an editor then says "too short" for `command: ""`
# rather than "expected array | null"
Command = Annotated[
    Union[Annotated[list[Str], Field(min_length=1)], Str],
    WithJsonSchema(
        {
            "type": ["array", "string"],
            "items": {"type": "string", "minLength": 1, "pattern": NO_NUL},
            "pattern": NO_NUL,
            "minItems": 1,
            "minLength": 1,
        }
    ),
]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Build(Model):
    """Build the image from a Dockerfile; its tag comes from a hash of the context."""

    context: Str = Field(default=".", description="Directory sent to the build, relative to fleet.yaml.", examples=[".", "./app"])
    dockerfile: Str = Field(default="Dockerfile", description="Dockerfile path inside the context.", examples=["Dockerfile", "docker/dev.Dockerfile"])
    args: Env = Field(
        default_factory=dict,
        description="Build arguments (--build-arg); numbers and booleans are written as strings.",
        examples=[{"NODE_VERSION": 20}],
    )


class WorkspaceMap(Model):
    """A workspace with a mode."""

    path: Str = Field(description="Host directory, relative to fleet.yaml.", examples=["./my-app"])
    mode: Literal["shared", "copy", "worktree"] = Field(
        default="shared",
        description="shared: mount the directory itself; copy: a private copy per agent; "
        "worktree: a git worktree per agent on its own branch.",
    )
    branch: Str | None = Field(default=None, description="worktree mode: the branch (default fleet/<agent>).", examples=["fleet/dark-mode"])


Workspace = Union[Str, WorkspaceMap]

IMAGE = "Image to run (a Docker image reference); set image or build, not both."
BUILD = "Build the image from a Dockerfile instead of pulling `image`."
ENGINE = (
    "docker only: the Docker engine it runs on: ssh://[user@]host[:port] (your ~/.ssh/config applies), "
    "tcp://host:port (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), unix:///path, or a docker context name; "
    "omitted: the local engine (DOCKER_HOST, the current context). Ports and grants need ssh://."
)
WORKSPACE = "Host directory mounted at /workspace: a path relative to fleet.yaml, or {path, mode, branch}."
COMMAND = "The command: a list of arguments, or a string run by /bin/sh -c (not empty)."
ENV = "Environment variables; numbers and booleans are written as strings. Names: letters, digits, '_'."
GRANTS = "Credentials the agent may use through the credential proxy: built-in (anthropic, github, gitlab, npm, openai) or defined under `grants:`."
RESTART = "always (default), on-failure or never."


class Defaults(Model):
    """Merged under every agent (an agent's own value wins; env is merged key by key)."""

    image: Str | None = Field(default=None, description=IMAGE, examples=["node:20"])
    build: Build | None = Field(default=None, description=BUILD)
    command: Command | None = Field(default=None, description=COMMAND, examples=[["npm", "start"], "npm run dev"])
    env: Env = Field(default_factory=dict, description=ENV, examples=[{"TZ": "UTC"}])
    grants: list[Name] = Field(default_factory=list, description=GRANTS, examples=[["github", "anthropic"]])
    restart: Literal["always", "on-failure", "never"] | None = Field(default=None, description=RESTART)


class Proxy(Model):
    """The routing proxy that serves <service>.<agent>.localhost."""

    port: Port = Field(default=8080, description="One port serves HTTP and HTTPS.", examples=[8080])
    bind: Str = Field(default="127.0.0.1", description="Address the routing proxy listens on.", examples=["127.0.0.1"])
    tls: bool = Field(default=True, description="Advertise https URLs (the port serves both).")


SECONDS = Annotated[int, Field(strict=True, ge=1, le=86400)]


class Host(Model):
    """A host agents can share: same working directory, same network, one bill."""

    provider: Literal["docker", "modal"] = Field(default="docker", description="docker (default): the local engine; modal: a Modal sandbox.")
    engine: Str | None = Field(default=None, description=ENGINE, examples=["ssh://dev@big-box"])
    image: Str | None = Field(default=None, description=IMAGE, examples=["python:3.12-slim"])
    build: Build | None = Field(default=None, description=BUILD)
    workspace: Workspace | None = Field(default=None, description=WORKSPACE + " Shared by the host's agents.", examples=["./"])
    env: Env = Field(default_factory=dict, description=ENV + " Merged under each agent's own env.")
    capabilities: Capabilities = Field(
        default_factory=list,
        description="Linux capabilities given back to every agent on this host (fleet drops NET_RAW by default); the plan names them.",
        examples=[["NET_RAW"]],
    )
    # modal only
    app: Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9._-]{1,63}$")] | None = Field(
        default=None, description="modal: app name (default fleet-<fleet>); letters, digits, '.', '_', '-', at most 63."
    )
    environment: Str | None = Field(default=None, description="modal: environment name.", examples=["main"])
    idle_timeout: SECONDS | None = Field(
        default=None, description="modal: seconds of inactivity before the sandbox stops.", examples=[3600]
    )
    timeout: SECONDS | None = Field(
        default=None, description="modal: sandbox lifetime in seconds (at most 24 h).", examples=[86400]
    )
    cpu: Annotated[float, Field(gt=0, le=64)] | None = Field(default=None, description="modal: CPU cores (fractions allowed).", examples=[2])
    memory: Annotated[int, Field(strict=True, ge=128)] | None = Field(default=None, description="modal: memory in MiB.", examples=[4096])
    region: Str | None = Field(default=None, description="modal: region to run the sandbox in.", examples=["us-east"])
    restore: Literal["latest"] | None = Field(
        default=None, description="modal: start a re-created host from its last snapshot."
    )


class Agent(Model):
    """A process with its own lifecycle inside a host."""

    host: Name | None = Field(default=None, description="A host from `hosts:`; omitted: a private host.", examples=["auth-host"])
    engine: Str | None = Field(default=None, description=ENGINE + " Private hosts only.", examples=["ssh://dev@big-box"])
    image: Str | None = Field(default=None, description=IMAGE + " Private hosts only.", examples=["node:20"])
    build: Build | None = Field(default=None, description=BUILD + " Private hosts only.")
    workspace: Workspace | None = Field(default=None, description=WORKSPACE + " Private hosts only.", examples=["./my-app"])
    command: Command | None = Field(default=None, description=COMMAND, examples=[["npm", "start"], "claude"])
    message: Str | None = Field(default=None, description="First message, typed into the agent once it starts.", examples=["Implement dark mode"])
    env: Env = Field(default_factory=dict, description=ENV, examples=[{"NODE_ENV": "development"}])
    ports: dict[Name, Port] = Field(
        default_factory=dict,
        description="Service name -> container port (1-65535, unique per host); served at https://<service>.<agent>.localhost:<proxy port>.",
        examples=[{"web": 3000}],
    )
    grants: list[Name] = Field(default_factory=list, description=GRANTS, examples=[["github"]])
    restart: Literal["always", "on-failure", "never"] | None = Field(default=None, description=RESTART)
    enabled: bool = Field(default=True, description="false: keep it in the file but not running.")
    capabilities: Capabilities = Field(default_factory=list)


class GrantDef(Model):
    """A user-defined grant: which hosts get which header."""

    hosts: Annotated[list[Str], Field(min_length=1)] = Field(description="Hostnames the credential is sent to.", examples=[["api.example.com"]])
    header: Str = Field(default="Authorization", description="The header the credential proxy sets.")
    value: Str = Field(default="Bearer {token}", description="The header's value; {token} is the stored secret.", examples=["Bearer {token}", "token {token}"])


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
            "patternProperties": {"^x-": {"description": "Free-form (e.g. to hold YAML anchors); ignored by fleet."}},
        },
    )

    fleet: Name = Field(description="The fleet's name; scopes every resource it creates.", examples=["my-app"])
    version: Literal[1] = Field(default=1, description="Schema version of this file: 1.")
    defaults: Defaults = Field(default_factory=Defaults, description="Merged under every agent (an agent's own value wins; env is merged key by key).")
    proxy: Proxy = Field(default_factory=Proxy, description="The routing proxy.")
    hosts: dict[Name, Host] = Field(default_factory=dict, description="Hosts agents can share (same working directory, same network).")
    agents: dict[Name, Agent] = Field(default_factory=dict, description="The agents, by name.")
    grants: dict[Name, GrantDef] = Field(default_factory=dict, description="User-defined grants, by name (not a built-in grant's name).")
