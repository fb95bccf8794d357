"""Presentation of plans, progress and status for people (text, colour, tables).

Layer 9. May import: `core` to `engine` (from `providers`, only the types in
`base` and the terminal bridge). Never `gitops`, `watch` or `cli`, and never
drives a provider itself: it shows what the engine returns.
"""
