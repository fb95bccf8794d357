"""Load: fleet.yaml to the validated, fully resolved `Desired`.

`loader` is the entry point (`load`, `validate_file`); `yamldoc` reads the YAML
keeping every value's line and column; `schema` is the file's schema; `problems`
and `checks` say what is wrong, `hints` words common slips better; `resolve`
makes `Desired`. Around them: `pathrules` (which directories may be workspaces
or build contexts), `buildctx` (build-context hashing) and `schemajson` (the
generated JSON Schema).

Layer 3. May import: `core`, `state`. Never `net` or any layer above it: nothing
here talks to Docker, Modal or the network.
"""
