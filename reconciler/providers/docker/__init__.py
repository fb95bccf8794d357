"""The Docker provider: the driver, images, security settings, engine events.

Part of layer 7 (`providers`). May import: `core`, `state`, `load`, `net`, `grants`,
`routing` (agentnet.py: fleet URLs inside containers).
"""
