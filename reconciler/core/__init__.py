"""The pure core: the model, the plan and its typed actions, reconcile (with routes
and teardown), what actions produce (outcome), targeting, backoff, names and labels.

Layer 1 of 12. Everything here is a function of its arguments: no files, no
sockets, no clock it does not receive, no Docker or Modal.

May import: the standard library and pydantic. Nothing else from fleet.
"""
