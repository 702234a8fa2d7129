"""Runtime services: LM clients, cache, config, telemetry, program runs, the app tree.

Kept light on import: heavy modules load when first used.
"""

from dspex.actors._lm_types import (
    Completion,
    LMProtocol,
    LMRequest,
    LMResponse,
    Message,
    Usage,
)

__all__ = ["Completion", "LMProtocol", "LMRequest", "LMResponse", "Message", "Usage"]
