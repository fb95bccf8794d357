"""Hostname routing: `https://<service>.<agent>.localhost:<port>` for every agent port.

Layer 6. May import: `core`, `state`, `load`, `net`, `grants`. Never `providers`,
`engine` or above (the route action in `engine` calls into `sync`, not the reverse).

- `table`: the route table in `$FLEET_HOME/routes.json`, derived from observed state.
- `sync`: what `fleet apply` does with the table (the route action).
- `proxy`: the proxy server: listeners (HTTP and TLS on one port), table reloads;
  `config`: its settings (`ProxyConfig`, `FLEET_PROXY_*`).
- `relay`: a client connection (`ClientConn`, the hot path), put together from
  `conn` (state machine, deadlines), `requests` (heads, routing, bodies), `rewrite`
  (what is forwarded), `connect` (to targets; 502/504), `respond` (responses,
  upgrades, local answers), `exchange`; `upstream`: target connections and their pool.
- `index` (hostname lookup), `pages` (the index and 404 pages).
- `daemon`: the one long-running proxy process per user machine; `process` (its
  files, finding it), `status` (`fleet proxy status`).
"""
