"""The Ray backend (``dspex[ray]``): programs, metrics and units of work on a Ray cluster.

Private to dspex: users select it with ``runtime.backend = "ray"`` or
``backend="ray"`` on ``Evaluate``/``compile``; see docs/distributed.md.
Importing this package does not import Ray.
"""
