"""Checks the schema cannot express: names that must refer to each other
(`host:` to `hosts:`, grants to the catalogue), ports unique per host, image or
build but not both, settings that belong to one provider, and the workspace and
build-context paths (they exist, and are not refused by `pathrules`).

Reads the parsed document (not the validated model), so every problem is found
in one pass even when the schema check failed too. The only I/O is looking at
the paths the file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from reconciler.core.errors import Problem
from reconciler.core.model import MODAL_RELAY_PORT, MODAL_ROUTER_PORT
from reconciler.load.engines import parse_engine
from reconciler.load import pathrules
from reconciler.load.problems import did_you_mean
from reconciler.load.schema import BUILTIN_GRANTS, MODAL_ONLY
from reconciler.load.yamldoc import Path_, Positions, dotted

# add(key path, message, prefer_key=False): record one problem at that key
Add = Callable[..., None]


def semantic_problems(file: str, base: Path, data: dict, pos: Positions, path: Path | None = None) -> list[Problem]:
    problems: list[Problem] = []

    def add(path: Path_, message: str, prefer_key: bool = False) -> None:
        line, col = pos.of(path, prefer_key=prefer_key)
        problems.append(Problem(file, line, col, dotted(path), message))

    def mapping(value: Any) -> dict:
        return value if isinstance(value, dict) else {}

    hosts = mapping(data.get("hosts"))
    agents = mapping(data.get("agents"))
    defaults = mapping(data.get("defaults"))
    user_grants = mapping(data.get("grants"))
    known_grants = set(BUILTIN_GRANTS) | set(user_grants)
    default_image = bool(defaults.get("image") or defaults.get("build"))
    if defaults.get("image") and defaults.get("build"):
        add(("defaults", "build"), "set image or build, not both")

    def listed(value: Any) -> list[tuple[int, Any]]:
        # a string is a schema error already; do not walk it letter by letter
        return list(enumerate(value)) if isinstance(value, list) else []

    for name in user_grants:
        if name in BUILTIN_GRANTS:
            add(("grants", name), f"'{name}' is a built-in grant; pick another name for a user-defined one", prefer_key=True)

    for hname, host in hosts.items():
        if not isinstance(host, dict):
            continue  # the schema check already says it must be a mapping
        provider = host.get("provider", "docker")
        if host.get("image") and host.get("build"):
            add(("hosts", hname, "build"), "set image or build, not both")
        if not (host.get("image") or host.get("build") or default_image):
            add(("hosts", hname), "no image: set image or build on the host, or defaults.image", prefer_key=True)
        if provider == "modal" and "capabilities" in host:
            add(("hosts", hname, "capabilities"), "only valid for provider: docker (a Modal sandbox sets its own)", prefer_key=True)
        if provider == "docker":
            for key in MODAL_ONLY:
                if key in host:
                    add(("hosts", hname, key), "only valid for provider: modal", prefer_key=True)
        elif "engine" in host:
            add(("hosts", hname, "engine"), "only valid for provider: docker (a Modal host runs on Modal)", prefer_key=True)
        _check_engine(add, ("hosts", hname), host)
        _check_paths(add, base, ("hosts", hname), host, path)

    claimed: dict[str, dict[int, tuple[str, str]]] = {}
    for aname, agent in agents.items():
        if not isinstance(agent, dict):
            continue  # the schema check already says it must be a mapping
        where = ("agents", aname)
        if aname in hosts:  # their workspace copies and worktree branches would be one
            add(where, f"agent '{aname}' has the name of host '{aname}'; give one of them another name", prefer_key=True)
        host_name = agent.get("host")
        if host_name is not None and not isinstance(host_name, str):
            pass  # a wrong type for host: is a schema problem; nothing more to check here
        elif host_name is not None:
            if host_name not in hosts:
                known = ", ".join(sorted(hosts)) or "none declared"
                add(where + ("host",), f"host '{host_name}' is not declared under hosts: (known: {known}){did_you_mean(host_name, hosts)}")
            else:
                for key in ("image", "build", "workspace", "engine"):
                    if key in agent:
                        add(where + (key,), f"not allowed on an agent of shared host '{host_name}': set it on hosts.{host_name}", prefer_key=True)
                if mapping(hosts[host_name]).get("provider") == "modal" and "capabilities" in agent:
                    add(where + ("capabilities",), f"not available on Modal host '{host_name}' (a Modal sandbox sets its own)", prefer_key=True)
        else:
            if agent.get("image") and agent.get("build"):
                add(where + ("build",), "set image or build, not both")
            if not (agent.get("image") or agent.get("build") or default_image):
                add(where, "no image: set image or build on the agent, or defaults.image", prefer_key=True)
            _check_engine(add, where, agent)
            _check_paths(add, base, where, agent, path)
        ports = mapping(agent.get("ports"))
        owner = host_name if isinstance(host_name, str) and host_name in hosts else None
        scope = claimed.setdefault(f"host:{owner}" if owner else f"agent:{aname}", {})
        for service, port in ports.items():
            if not isinstance(port, int) or isinstance(port, bool):
                continue
            if owner and port == MODAL_ROUTER_PORT and mapping(hosts[owner]).get("provider") == "modal":
                add(where + ("ports", service), f"port {port} is taken on Modal host '{owner}' by fleet's port router; use another port")
            elif owner and port == MODAL_RELAY_PORT and mapping(hosts[owner]).get("provider") == "modal":
                add(where + ("ports", service), f"port {port} is taken on Modal host '{owner}' by fleet's grants relay; use another port")
            elif port in scope:
                other_agent, other_service = scope[port]
                if owner:
                    add(where + ("ports", service), f"port {port} on host '{owner}' is already claimed by agent '{other_agent}' ({other_service}); ports are unique per host")
                else:
                    add(where + ("ports", service), f"port {port} is already used by service '{other_service}' of this agent")
            else:
                scope[port] = (aname, service)
        engine_of = mapping(hosts[owner]) if owner else (agent if host_name is None else {})
        scheme = _engine_scheme(engine_of.get("engine"))
        if scheme in ("tcp", "unix"):
            for key in ("ports", "grants"):
                if agent.get(key):
                    add(where + (key,), f"needs an ssh:// engine: fleet reaches agents on another engine, and brings their "
                        f"granted requests back, through SSH (engine {engine_of.get('engine')!r} is {scheme}://)", prefer_key=True)
        for idx, grant in listed(agent.get("grants")):
            if isinstance(grant, str) and grant not in known_grants:
                add(where + ("grants", idx), f"unknown grant '{grant}' (built in: {', '.join(BUILTIN_GRANTS)}; or define it under grants:){did_you_mean(grant, known_grants)}")
    for idx, grant in listed(defaults.get("grants")):
        if isinstance(grant, str) and grant not in known_grants:
            add(("defaults", "grants", idx), f"unknown grant '{grant}'{did_you_mean(grant, known_grants)}")
    _check_paths(add, base, ("defaults",), defaults)
    return problems


def _check_engine(add: Add, where: Path_, section: dict) -> None:
    """`engine:` parses (engines.py: ssh://, tcp://, unix://, a docker context)."""
    if "engine" not in section or section.get("engine") is None:
        return
    value = section["engine"]
    if not isinstance(value, str):
        return  # a wrong type is a schema problem
    found = parse_engine(value)
    if isinstance(found, str):
        add(where + ("engine",), found)


def _engine_scheme(value: Any) -> str | None:
    """The scheme of a valid `engine:` value (None: none, or not valid: said elsewhere)."""
    if not isinstance(value, str):
        return None
    found = parse_engine(value)
    return None if isinstance(found, str) else found.scheme


def _check_paths(add: Add, base: Path, where: Path_, section: dict, fleet_file: Path | None = None) -> None:
    ws = section.get("workspace")
    ws_path = ws.get("path") if isinstance(ws, dict) else ws
    if isinstance(ws_path, str) and ws_path:
        key = where + (("workspace", "path") if isinstance(ws, dict) else ("workspace",))
        shared = (not isinstance(ws, dict) or ws.get("mode", "shared") == "shared") and section.get("provider") != "modal"
        try:
            p = pathrules.real(base / ws_path)
        except pathrules.PathLoop:
            add(key, f"symlink loop: {ws_path!r} cannot be resolved")
            p = None
        if p is None:
            pass
        elif not p.exists():
            add(key, f"directory does not exist (found {ws_path!r}, resolved to {p})")
        elif not p.is_dir():
            add(key, f"not a directory (found {ws_path!r})")
        elif (why := pathrules.workspace_refusal(p)) is not None:
            add(key, f"refused as a workspace: {why}")
        elif isinstance(ws, dict) and ws.get("mode") == "worktree" and not (p / ".git").exists():
            add(where + ("workspace", "mode"), f"worktree mode needs a git repository, and {ws_path!r} is not one (no .git)")
        elif shared and fleet_file is not None and (why := pathrules.linked_file_refusal(p, fleet_file)) is not None:
            add(key, why)
    build = section.get("build")
    if isinstance(build, dict):
        ctx = build.get("context", ".")
        if isinstance(ctx, str):
            key = where + ("build", "context")
            try:
                cdir = pathrules.real(base / ctx)
            except pathrules.PathLoop:
                add(key, f"symlink loop: {ctx!r} cannot be resolved")
                return
            if not cdir.is_dir():
                add(key, f"build context directory does not exist (found {ctx!r})")
            elif (why := pathrules.context_refusal(cdir)) is not None:
                add(key, f"refused as a build context: {why}")
            else:
                df = build.get("dockerfile", "Dockerfile")
                if isinstance(df, str) and not (cdir / df).is_file():
                    add(where + ("build", "dockerfile"), f"Dockerfile not found in the build context (found {df!r})")

