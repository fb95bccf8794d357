"""The Modal provider: the driver, the in-sandbox port router, shell helpers,
local Modal state. `modal` is imported only when a Modal host is used.

Part of layer 7 (`providers`): may import what `providers` may, never `engine`
or above. Imported only by `providers` and `engine`.
"""
