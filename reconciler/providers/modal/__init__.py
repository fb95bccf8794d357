"""The Modal provider: the driver, the in-sandbox port router, shell helpers,
local Modal state. `modal` is imported only when a Modal host is used.

Part of layer 7 (`providers`). May import: `core`, `state`, `load`, `net`.
"""
