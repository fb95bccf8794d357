"""fleet: a declarative reconciler for fleets of coding agents (Docker and Modal)."""

__version__ = "0.1.0"
