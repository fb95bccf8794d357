"""Network building blocks shared by both proxies (the routing reverse proxy and
the grants forward proxy): the one HTTP layer; neither proxy keeps a copy of
any of it.

- `http1`: the HTTP/1 parser and framer;
- `responses`: reason phrases, local responses, hop-by-hop header rewriting;
- `pipes`: body delimiting and copying, piping, backpressure;
- `tls`: server (SNI) and upstream (verified) TLS contexts; `ca`: the local CAs;
- `envconfig`: settings from `FLEET_*` variables; `limits`: per-source caps,
  descriptors, memory; `guard`: client-connection defences; `logcontrol`: logs.

Layer 4. May import: `core`, `state`. Knows nothing of routes, grants or providers.
"""
