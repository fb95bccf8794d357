"""The routing proxy's settings (`ProxyConfig`), defaults and `FLEET_PROXY_*` overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from reconciler.net.envconfig import env_int, env_text, load_seconds
from reconciler.net.limits import DEFAULT_MAX_CONNECTIONS_PER_SOURCE as MAX_CONNECTIONS
from reconciler.net.limits import DEFAULT_MAX_PENDING_PER_SOURCE as MAX_PENDING
from reconciler.net.limits import SourceLimiter
from reconciler.routing.table import Listen

_SECONDS = {
    "FLEET_PROXY_HEADER_TIMEOUT": "header_timeout",
    "FLEET_PROXY_KEEPALIVE_TIMEOUT": "keepalive_timeout",
    "FLEET_PROXY_CONNECT_TIMEOUT": "connect_timeout",
    "FLEET_PROXY_RESPONSE_TIMEOUT": "response_timeout",
    "FLEET_PROXY_BODY_TIMEOUT": "body_timeout",
    "FLEET_PROXY_RELOAD_INTERVAL": "reload_interval",
}


@dataclass
class ProxyConfig:
    header_timeout: float = 30.0  # a request head (or TLS handshake) must arrive within this
    keepalive_timeout: float = 75.0  # an idle client connection is closed after this
    connect_timeout: float = 5.0  # connecting to a target
    # From a request fully handed to the target until the first byte of its
    # response head; expiry answers 504. Never cuts a response once it has
    # started (SSE, chunked streams, WebSocket after the 101).
    response_timeout: float = 60.0
    max_header_bytes: int = 64 * 1024
    reload_interval: float = 0.3  # route table poll
    listen_retry: float = 2.0  # retry a listen port that failed
    pool_idle_timeout: float = 30.0
    pool_max_idle: int = 64  # idle upstream connections kept per target
    high_water: int = 256 * 1024  # per-direction buffer before backpressure
    # A request body must bring body_min_bytes in every body_timeout window
    # until it is whole (or its response starts); else 408 and close.
    body_timeout: float = 30.0
    body_min_bytes: int = 1024
    # Connections one source address may hold that have not sent a complete
    # request head, and that it may hold open in all.
    max_pending_per_source: int = MAX_PENDING
    max_connections_per_source: int = MAX_CONNECTIONS
    upstream_ca: str | None = None  # extra CA bundle for https targets
    default_listen: Listen | None = field(default_factory=lambda: Listen(port=8080))
    agent_bind: str | None = None  # also listen here (the bridge gateway) at every port: URLs inside agents

    @classmethod
    def from_env(cls) -> "ProxyConfig":
        cfg = cls()
        env = os.environ
        load_seconds(cfg, env, _SECONDS)
        cfg.body_min_bytes = env_int(env, "FLEET_PROXY_BODY_MIN_BYTES", cfg.body_min_bytes, minimum=0)
        caps = SourceLimiter.from_env(env)
        cfg.max_pending_per_source, cfg.max_connections_per_source = caps.max_pending, caps.max_total
        cfg.upstream_ca = env_text(env, "FLEET_UPSTREAM_CA", cfg.upstream_ca)
        return cfg
