"""The pure core: the model, the plan and its typed actions, reconcile (with routes
and teardown), what actions produce (outcome), targeting, backoff, names and labels.

Every decision fleet takes is taken here. Everything is a function of its
arguments: no files, no sockets, no clock it does not receive, no Docker or Modal.

Layer 1, the lowest. May import: the standard library and pydantic, nothing
else (no other layer of fleet, no other third-party library).
"""
