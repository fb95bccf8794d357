"""The `fleet` command line. Thin: parse arguments, call one function, render.

Each command group lives in its own module and registers itself on `app` here.

Layer 12, the top (only `reconciler/__main__.py` is above it). May import every
layer, but reaches providers only through `engine` (the types in
`providers.base` and the terminal bridge `providers.terminal` are fine).
"""

from __future__ import annotations

from reconciler.cli.app import app, main  # noqa: F401
from reconciler.cli import core  # noqa: F401,E402  (registers validate/diff/plan/apply/status/destroy/fmt/schema)
from reconciler.cli import agents  # noqa: F401,E402  (registers logs/exec/attach/message)
from reconciler.cli import routing  # noqa: F401,E402  (registers proxy/ca)
from reconciler.cli import grants  # noqa: F401,E402  (registers grant set/list/rm)
from reconciler.cli import verbs  # noqa: F401,E402  (registers stop/start/restart/ls)

__all__ = ["app", "main"]
