"""`fleet apply --watch`: the loop that re-applies on file edits and drift,
its triggers and its live view.

Layer 11. May import everything below it and goes through `engine` for all
work; never `cli`.
"""
