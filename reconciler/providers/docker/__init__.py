"""The Docker provider: driver (lifecycle, capabilities), session (client,
errors), observe, images, ops (logs, exec, attach, messages, archives), events,
security (hardening, the shared network, workspace volumes), and legacy (the
marked adapter to the engine, until the executor passes extras itself).

Part of layer 7 (`providers`): may import what `providers` may, never `engine`
or above.
Imported only by `providers` and `engine`.
"""
