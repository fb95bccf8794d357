"""The grant catalogue: for each grant, which hosts get which header.

Built in:

- `github`: api.github.com and uploads.github.com get `Authorization: Bearer
  <token>`; github.com gets HTTP basic `x-access-token:<token>`, so `git clone`,
  `git fetch` and `git push` over https work.
- `anthropic`: api.anthropic.com gets `x-api-key: <token>`.
- `openai`: api.openai.com gets `Authorization: Bearer <token>`.
- `gitlab`: gitlab.com gets `Authorization: Bearer <token>` (GitLab accepts a
  personal access token in the OAuth-compliant header on its API), except git's
  smart-HTTP paths (`/info/refs`, `/git-upload-pack`, `/git-receive-pack`),
  which get HTTP basic `oauth2:<token>`, the form git over https needs.
- `npm`: registry.npmjs.org gets `Authorization: Bearer <token>`.

User-defined grants come from fleet.yaml (`grants: {name: {hosts, header,
value}}`); `{token}` in `value` is replaced by the secret. A host is `name` (port
443) or `name:port`.

A rule only says where a secret goes; the secret itself is read from the store
by the forward proxy at the moment it sends the request.
"""

from __future__ import annotations

import base64
import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from reconciler.core.errors import FleetError

GIT_SMART_HTTP = r"^/.*(/info/refs(\?.*)?|/git-upload-pack|/git-receive-pack)$"


@dataclass(frozen=True)
class Rule:
    """One host of one grant and the header it gets."""

    grant: str
    host: str
    port: int = 443
    header: str = "Authorization"
    value: str = "Bearer {token}"  # `{token}` is the secret
    basic_user: str | None = None  # set: the value is HTTP basic `<basic_user>:<token>`
    path: str | None = None  # a regex the request target must match (None: every path)

    def matches(self, target: str) -> bool:
        return self.path is None or re.search(self.path, target) is not None

    def render(self, token: str) -> str:
        """The header value carrying `token`."""
        if self.basic_user is not None:
            return "Basic " + base64.b64encode(f"{self.basic_user}:{token}".encode()).decode()
        return self.value.replace("{token}", token)

    def describe(self) -> str:
        where = self.host if self.port == 443 else f"{self.host}:{self.port}"
        how = f"basic {self.basic_user}:<token>" if self.basic_user is not None else f"{self.header}: {self.value.replace('{token}', '<token>')}"
        if self.path is not None:
            how += " (git paths)"
        return f"{where} ({how})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Rule":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


BUILTIN: dict[str, tuple[Rule, ...]] = {
    "github": (
        Rule("github", "api.github.com"),
        Rule("github", "uploads.github.com"),
        Rule("github", "github.com", basic_user="x-access-token"),
    ),
    "anthropic": (Rule("anthropic", "api.anthropic.com", header="x-api-key", value="{token}"),),
    "openai": (Rule("openai", "api.openai.com"),),
    "gitlab": (
        Rule("gitlab", "gitlab.com", basic_user="oauth2", path=GIT_SMART_HTTP),
        Rule("gitlab", "gitlab.com"),
    ),
    "npm": (Rule("npm", "registry.npmjs.org"),),
}


def split_host(entry: str) -> tuple[str, int]:
    """`api.example` -> (api.example, 443); `api.example:8443` -> (api.example, 8443)."""
    text = entry.strip().lower().rstrip(".")
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host and not host.endswith("]"):
        return host, int(port)
    if sep and port.isdigit() and host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port)
    return text.strip("[]"), 443


def user_rules(name: str, definition: Mapping[str, Any]) -> tuple[Rule, ...]:
    header = str(definition.get("header") or "Authorization")
    value = str(definition.get("value") or "Bearer {token}")
    out = []
    for entry in definition.get("hosts") or ():
        host, port = split_host(str(entry))
        out.append(Rule(name, host, port, header=header, value=value))
    return tuple(out)


def rules_of(name: str, user: Mapping[str, Any] | None = None) -> tuple[Rule, ...]:
    """The rules of grant `name`: fleet.yaml's `grants:` first, then built in."""
    if user and name in user:
        return user_rules(name, user[name])
    if name in BUILTIN:
        return BUILTIN[name]
    raise FleetError(f"unknown grant '{name}' (built in: {', '.join(sorted(BUILTIN))}; or define it under grants:)")


def rules_for(names: Sequence[str], user: Mapping[str, Any] | None = None) -> list[Rule]:
    """Every rule an agent holding `names` gets, in the order of its grants."""
    out: list[Rule] = []
    for n in names:
        out.extend(rules_of(n, user))
    return out


def pick(rules: Sequence[Rule], host: str, port: int, target: str | None = None) -> Rule | None:
    """The first rule covering `host:port` (and `target`, when given)."""
    for r in rules:
        if r.host == host and r.port == port and (target is None or r.matches(target)):
            return r
    return None


def covers(rules: Sequence[Rule], host: str, port: int) -> bool:
    return any(r.host == host and r.port == port for r in rules)


def hosts_of(name: str, user: Mapping[str, Any] | None = None) -> list[str]:
    """Hosts a grant covers, for `fleet grant list` (empty when unknown here)."""
    try:
        rules = rules_of(name, user)
    except FleetError:
        return []
    return list(dict.fromkeys(r.host if r.port == 443 else f"{r.host}:{r.port}" for r in rules))
