"""Network building blocks shared by both proxies: the HTTP/1 parser and framer,
local responses, TLS contexts, the certificate authority, per-source limits,
request guards and log control.

Layer 4. May import: `core`, `state`. Knows nothing of routes, grants or providers.
"""
