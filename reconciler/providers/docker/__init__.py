"""The Docker provider: driver (lifecycle, capabilities), session (client,
errors), observe, images, ops (logs, exec, attach, messages, archives), events,
and security (hardening, the shared network, workspace volumes).

Part of layer 7 (`providers`): may import what `providers` may, never `engine`
or above.
Imported only by `providers` and `engine`.
"""
