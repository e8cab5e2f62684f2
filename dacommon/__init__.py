"""Infrastructure that tent and proda share: one-line errors, files written whole, weights-only
checkpoint loading, the device and torch.distributed.

Each concept has one module here; tent and proda keep their own messages (config keys vs
command-line flags) and public names on top of it.
"""
