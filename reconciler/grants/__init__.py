"""Grants: agents call GitHub, Anthropic and other APIs without ever seeing a token.

`store` keeps the secrets encrypted under `$FLEET_HOME/credentials/`,
`catalogue` says which hosts get which header, `agents` maps each agent's proxy
credential to what it may use, `inject` prepares an agent's container, and
`forward` is the TLS-intercepting forward proxy (hosted by the fleet proxy
process) that sets the headers on the way out; its parts, by subject, are
`forward_config`, `forward_wire` (its answers, CONNECT authorities),
`forward_access` (credentials, owners, secrets), `forward_upstream`,
`forward_exchange` (one request), `forward_connect` (CONNECT, interception)
and `forward_requests` (one client connection). The HTTP itself is
`reconciler.net`, shared with the routing proxy: parsing and framing
(`http1`), reason phrases, answers, head rewriting and keep-alive
(`responses`), upstream TLS (`tls`), body copies and tunnels (`pipes`),
settings from the environment (`envconfig`).

Layer 5. May import: `core`, `state`, `load`, `net`. Never `routing` or any
layer above it: the fleet proxy process (`routing.daemon`) hosts the forward
proxy and imports it, not the reverse; making sure that process runs is the
engine's part of an action.
"""
