"""OTP-style supervision on pykka: actors, monitors, supervisors, registry, pools.

This layer knows nothing of language models and could be published alone.
"""
