"""Hostname routing: `https://<service>.<agent>.localhost:<port>` for every agent port.

- `ca`: a local certificate authority minting leaf certificates on the fly (also
  reused by the grants interception CA).
- `table`: the route table in `$FLEET_HOME/routes.json`, derived from observed state.
- `sync`: what `fleet apply` does with the table (the route action).
- `proxy`: the proxy server: listeners (HTTP and TLS on one port), table reloads.
- `relay` (its hot path), `http1` (head parsing), `index` (hostname lookup),
  `pages` (the index and 404 pages).
- `daemon`: the one long-running proxy process per user machine.
"""
