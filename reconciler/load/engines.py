"""Where a Docker engine is: an `engine:` value parsed and checked.

`parse_engine(value)` turns what a user wrote into an `EngineAddress`, or returns
one line saying what is wrong with it: `ssh://[user@]host[:port]`, `tcp://host[:port]`
(TLS from DOCKER_TLS_VERIFY / DOCKER_TLS / DOCKER_CERT_PATH, as the docker CLI does),
`unix:///path`, or the name of a docker context (~/.docker/contexts, or
$DOCKER_CONFIG/contexts). It reads the environment and the context files, and
changes nothing. Imports: the stdlib only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

REMOTE_SOCKET = "/var/run/docker.sock"
_EXAMPLES = "ssh://user@host, tcp://host:2376, unix:///var/run/docker.sock or a docker context name"
_HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CONTEXT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # docker's rule for context names


@dataclass(frozen=True)
class TLSFiles:
    """Client TLS for tcp://: CA, client certificate and key (each may be absent)."""

    ca: str | None
    cert: str | None
    key: str | None
    verify: bool


@dataclass(frozen=True)
class EngineAddress:
    """A parsed `engine:` value. `value` is what the user wrote; a context name is
    resolved to its endpoint (`context` keeps the name)."""

    value: str
    scheme: Literal["ssh", "tcp", "unix"]
    host: str = ""
    port: int | None = None
    user: str | None = None
    path: str = ""
    tls: TLSFiles | None = None
    context: str | None = None

    @property
    def url(self) -> str:
        """The address as docker's base_url (tcp:// is https:// for the SDK when `tls`)."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{host}{port}"

    def ssh_args(self) -> list[str]:
        """The destination for the system ssh: [-l user] [-p port] host."""
        args: list[str] = []
        if self.user:
            args += ["-l", self.user]
        if self.port:
            args += ["-p", str(self.port)]
        return args + [self.host]

    def __str__(self) -> str:
        return self.value


def _port(text: str, value: str) -> int | str:
    if not text.isdigit():
        return f"{value}: the port {text!r} is not a number"
    port = int(text)
    if not 1 <= port <= 65535:
        return f"{value}: the port {port} is out of range (1-65535)"
    return port


def _split_authority(value: str, rest: str) -> tuple[str | None, str, int | None] | str:
    """user@host:port (or [v6]:port) after the scheme; a message when it is not that."""
    if "[" in rest and "]" not in rest:
        return f"{value}: an IPv6 address needs its closing ']'"
    try:
        parts = urlsplit("x://" + rest)
        user, host, port_text = parts.username, parts.hostname or "", None
        netloc = parts.netloc.rsplit("@", 1)[-1]
        if netloc.startswith("["):
            port_text = netloc.split("]", 1)[1][1:] or None
        elif ":" in netloc:
            port_text = netloc.split(":", 1)[1]
            if ":" in port_text:
                return f"{value}: more than one ':' (an IPv6 address goes in brackets: [::1])"
    except ValueError as exc:
        return f"{value}: {exc}"
    if parts.password is not None:
        return f"{value}: no password in an engine address; use a key (ssh-agent, ~/.ssh/config)"
    if parts.query or parts.fragment or "?" in rest or "#" in rest:
        return f"{value}: no '?' or '#' in an engine address"
    if parts.path not in ("", "/"):
        return f"{value}: nothing may follow the host (found {parts.path!r})"
    if not host:
        return f"{value}: no host after '//'"
    if user is not None and not _USER_RE.match(user):
        return f"{value}: {user!r} is not a user name"
    if ":" not in host and not _HOST_RE.match(host):
        return f"{value}: {host!r} is not a host name"
    port: int | None = None
    if port_text is not None:
        if port_text == "":
            return f"{value}: ':' without a port after it"
        p = _port(port_text, value)
        if isinstance(p, str):
            return p
        port = p
    return user, host, port


def _tls_from_env(env: Mapping[str, str], value: str) -> TLSFiles | None | str:
    """TLS as the docker CLI takes it: DOCKER_TLS_VERIFY (any non-empty value) verifies the
    server with DOCKER_CERT_PATH (default ~/.docker)/{ca,cert,key}.pem; DOCKER_TLS alone
    encrypts without verifying."""
    verify = bool(env.get("DOCKER_TLS_VERIFY"))
    if not verify and not env.get("DOCKER_TLS"):
        return None
    cert_dir = Path(env.get("DOCKER_CERT_PATH") or Path(env.get("HOME") or Path.home()) / ".docker")
    files = {n: cert_dir / f"{n}.pem" for n in ("ca", "cert", "key")}
    if verify and not files["ca"].is_file():
        return f"{value}: DOCKER_TLS_VERIFY is set but {files['ca']} is missing (set DOCKER_CERT_PATH)"
    have_cert, have_key = files["cert"].is_file(), files["key"].is_file()
    if have_cert != have_key:
        return f"{value}: {files['cert'] if have_cert else files['key']} exists without {files['key'] if have_cert else files['cert']}"
    return TLSFiles(
        ca=str(files["ca"]) if files["ca"].is_file() else None,
        cert=str(files["cert"]) if have_cert else None,
        key=str(files["key"]) if have_key else None,
        verify=verify,
    )


def _config_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DOCKER_CONFIG") or Path(env.get("HOME") or Path.home()) / ".docker")


def _contexts(env: Mapping[str, str]) -> dict[str, tuple[Path, dict]]:
    """Docker contexts by name: (their meta directory, meta.json)."""
    found: dict[str, tuple[Path, dict]] = {}
    for meta in sorted((_config_dir(env) / "contexts" / "meta").glob("*/meta.json")):
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("Name"), str):
            found[data["Name"]] = (meta.parent, data)
    return found


def _from_context(name: str, env: Mapping[str, str]) -> EngineAddress | str:
    if name == "default":  # docker's built-in context: the environment, else the local socket
        host = env.get("DOCKER_HOST") or f"unix://{REMOTE_SOCKET}"
        parsed = parse_engine(host, env={k: v for k, v in env.items() if k != "DOCKER_HOST"})
        if isinstance(parsed, str):
            return f"context default: DOCKER_HOST: {parsed}"
        return EngineAddress(**{**parsed.__dict__, "value": name, "context": name})
    contexts = _contexts(env)
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        hint = f"; for a host write ssh://{name}" if "." in name or "@" in name else ""
        return f"{name}: no docker context of that name (known: {known}; see `docker context ls`){hint}"
    meta_dir, data = contexts[name]
    endpoint = ((data.get("Endpoints") or {}).get("docker")) or {}
    endpoint_host = endpoint.get("Host")
    if not isinstance(endpoint_host, str) or not endpoint_host:
        return f"{name}: docker context without a docker endpoint ({meta_dir / 'meta.json'})"
    parsed = parse_engine(endpoint_host, env={})  # the context's own TLS, not the environment's
    if isinstance(parsed, str):
        return f"context {name}: {parsed}"
    tls = parsed.tls
    if parsed.scheme == "tcp":
        tls_dir = _config_dir(env) / "contexts" / "tls" / meta_dir.name / "docker"
        files = {n: tls_dir / f"{n}.pem" for n in ("ca", "cert", "key")}
        have = {n: str(f) if f.is_file() else None for n, f in files.items()}
        if any(have.values()):  # the docker CLI uses TLS for a context that stores TLS files
            tls = TLSFiles(ca=have["ca"], cert=have["cert"], key=have["key"],
                           verify=not endpoint.get("SkipTLSVerify", False))
    return EngineAddress(**{**parsed.__dict__, "value": name, "tls": tls, "context": name})


def parse_engine(value: object, *, env: Mapping[str, str] | None = None) -> EngineAddress | str:
    """An `engine:` value as an EngineAddress, or one line saying what is wrong
    (without file:line: the loader adds where it was written)."""
    env = os.environ if env is None else env
    if not isinstance(value, str):
        return f"must be a string: {_EXAMPLES}"
    if not value.strip():
        return f"is empty: write {_EXAMPLES}"
    if value != value.strip() or any(c.isspace() for c in value):
        return f"{value!r}: no spaces in an engine address"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{value!r}: control characters in an engine address"
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", value)
    if m and m.group(1).lower() in ("ssh", "tcp", "unix") and not m.group(2).startswith("//"):
        return f"{value}: '{m.group(1)}:' must be followed by '//' ({m.group(1).lower()}://...)"
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep:
        if value.startswith("/") or value.endswith(".sock"):
            return f"{value}: a socket is written unix://{value if value.startswith('/') else '/' + value}"
        if "@" in value:
            return f"{value}: a host over SSH is written ssh://{value}"
        if ":" in value:
            return f"{value}: an engine over TCP is written tcp://{value} (or ssh://{value.split(':')[0]} over SSH)"
        if not _CONTEXT_RE.match(value):
            return f"{value}: not an engine address ({_EXAMPLES})"
        return _from_context(value, env)
    if scheme in ("http", "https"):
        return f"{value}: {scheme}:// is not a Docker engine address; write tcp://{rest.rstrip('/')} (TLS from DOCKER_TLS_VERIFY) or ssh://..."
    if scheme == "npipe":
        return f"{value}: Windows named pipes are not supported ({_EXAMPLES})"
    if scheme == "unix":
        path = rest
        if not path or path == "/":
            return f"{value}: no socket path after unix:// (unix:///var/run/docker.sock)"
        if not path.startswith("/"):
            return f"{value}: the socket path must be absolute: unix:///{path}"
        if "?" in path or "#" in path:
            return f"{value}: no '?' or '#' in an engine address"
        return EngineAddress(value=value, scheme="unix", path=os.path.normpath(path))
    if scheme not in ("ssh", "tcp"):
        return f"{value}: unknown scheme {scheme}:// (use {_EXAMPLES})"
    parts = _split_authority(value, rest)
    if isinstance(parts, str):
        return parts
    user, host, port = parts
    if scheme == "ssh":
        return EngineAddress(value=value, scheme="ssh", host=host, port=port, user=user)
    if user is not None:
        return f"{value}: tcp:// takes no user name (ssh://{user}@{host} over SSH)"
    tls = _tls_from_env(env, value)
    if isinstance(tls, str):
        return tls
    return EngineAddress(value=value, scheme="tcp", host=host, port=port or (2376 if tls else 2375), tls=tls)
