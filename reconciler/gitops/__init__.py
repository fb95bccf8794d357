"""GitOps: saved plans, machine-readable output (JSON), `fleet fmt`.

Layer 10. May import: `core` to `view` (all the layers below). Never `watch` or
`cli`; reaches a provider only through `engine` (no driver, no `get_provider`).
"""
