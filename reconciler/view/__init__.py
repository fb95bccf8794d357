"""Presentation of plans, progress and status for people (text, colour, tables).

Layer 9. May import: `core`, `state`, `load`, `routing` (route tables), `engine`
(events and results). Never drives a provider itself.
"""
