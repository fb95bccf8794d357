"""The Modal provider: driver (observation, agents, capabilities), session
(client, errors, sandbox plumbing), hosts (sandboxes, uploads, snapshots), io
(input, logs, exec, attach, archives), tags, the in-sandbox port router and
shell helpers, local Modal state. `modal` is imported only when a Modal host
is used.

Part of layer 7 (`providers`): may import what `providers` may, never `engine`
or above. Imported only by `providers` and `engine`.
"""
