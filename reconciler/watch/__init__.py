"""`fleet apply --watch`: the loop that re-applies on file edits and drift,
its triggers and its live view.

Layer 11. May import: `core` to `gitops` (all the layers below), and goes
through `engine` for all work (no driver, no `get_provider`). Never `cli`.
"""
