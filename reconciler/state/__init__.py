"""Local state under `$FLEET_HOME`: the home folder, the apply lock, usage,
first-message and stop records, local workspace copies and worktrees.

Layer 2. May import: `core`. Never `load` or any layer above it: no provider,
no network, no CLI.
"""
