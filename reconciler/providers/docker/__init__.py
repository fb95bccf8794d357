"""The Docker provider: the driver, images, security settings, engine events.

Part of layer 7 (`providers`): may import what `providers` may, never `engine`
or above. Imported only by `providers` and `engine`.
"""
