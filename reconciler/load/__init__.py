"""Load: fleet.yaml as written (`spec`) to the resolved `Desired` (`loader`),
with hints, path rules, build-context hashing and the generated JSON Schema.

Layer 3. May import: `core`, `state`. Never a provider, the network or the CLI.
"""
