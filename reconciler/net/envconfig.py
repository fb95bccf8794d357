"""Settings from the environment, each checked, with one error line per bad value.

Both proxies read their knobs from `FLEET_*` variables. An unset or empty
variable leaves the default; a value that does not parse, or lies outside its
range, raises `FleetError` naming the variable and what it found (the proxy
then reports it and refuses to start, or fails closed).

    cfg.header_timeout = env_seconds(env, "FLEET_PROXY_HEADER_TIMEOUT", cfg.header_timeout)
    load_seconds(cfg, env, {"FLEET_PROXY_HEADER_TIMEOUT": "header_timeout"})  # the same, for several
    port = env_port(env, "FLEET_GRANTS_PORT")  # None when unset
"""

from __future__ import annotations

import math
from typing import Mapping

from reconciler.core.errors import FleetError


def env_text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The variable's value, or `default` when it is unset or empty."""
    return env.get(name) or default


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum]."""
    text = env.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"of at least {minimum}"
        raise FleetError(f"{name} must be a whole number {bound} (found {text!r})")
    return value


def env_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A positive, finite number of seconds."""
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or math.isinf(value):
        raise FleetError(f"{name} must be a positive number of seconds (found {text!r})")
    return value


def env_port(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    """A TCP port number (0 to 65535; 0: any free port)."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise FleetError(f"{name}: expected a port number (found {text!r})")
    return int(text)


def load_seconds(cfg: object, env: Mapping[str, str], names: Mapping[str, str]) -> None:
    """For each `VARIABLE: attribute` in `names`, set `cfg.attribute` from the
    variable when it is set (`env_seconds`); the first bad one raises."""
    for var, attr in names.items():
        setattr(cfg, attr, env_seconds(env, var, getattr(cfg, attr)))
