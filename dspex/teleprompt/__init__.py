"""DSPy's ``dspy.teleprompt`` path: ``from dspex.teleprompt import BootstrapFewShot``.

The same classes as the top-level names, for DSPy code that imports its
optimizers from ``dspy.teleprompt``.
"""

from dspex.programs._teleprompt import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    GEPA,
    LabeledFewShot,
    MIPROv2,
    SIMBA,
    Teleprompter,
)

BootstrapRS = BootstrapFewShotWithRandomSearch
"""DSPy's short name for :class:`BootstrapFewShotWithRandomSearch`."""

__all__ = [
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "GEPA",
    "LabeledFewShot",
    "MIPROv2",
    "SIMBA",
    "Teleprompter",
]
