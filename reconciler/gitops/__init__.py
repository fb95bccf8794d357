"""GitOps: saved plans, machine-readable output (JSON), `fleet fmt`.

Layer 10. May import everything below it: `core`, `state`, `load`, `routing`,
`engine`, `view`. Never drives a provider except through `engine`.
"""
