"""fleet: a declarative reconciler for fleets of coding agents (Docker and Modal).

The package's folders are its layers, low to high: core, state, load, net,
grants, routing, providers, engine, view, gitops, watch, cli. A module imports
only from its own layer or lower ones; each package's docstring says what it
holds and what it may import, and tests/unit/test_architecture.py checks it (see
"How it works" in the README). This module holds only `__version__`, which any
layer may import; `__main__` (`python -m reconciler`) is the top, above `cli`.
"""

__version__ = "0.1.0"
