"""The engine: observe, execute, the pipeline and the verbs built on them.
The only layer that drives providers.

Layer 8. May import: `core` to `providers` (all the layers below). Never the
presentation (`view`, `gitops`), `watch` or the CLI: it reports progress as
events that those layers render.
"""
