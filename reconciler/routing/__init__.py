"""Hostname routing: `https://<service>.<agent>.localhost:<port>` for every agent port.

- `ca`: a local certificate authority minting leaf certificates on the fly (also
  reused by the grants interception CA).
- `table`: the route table in `$FLEET_HOME/routes.json`, derived from observed state.
- `proxy`: the asyncio reverse proxy serving HTTP and TLS on one port.
- `daemon`: the one long-running proxy process per user machine.
"""
