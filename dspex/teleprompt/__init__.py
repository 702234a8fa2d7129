"""DSPy's ``dspy.teleprompt`` path: ``from dspex.teleprompt import BootstrapFewShot``.

The same classes as the top-level names, for DSPy code that imports its
optimizers from ``dspy.teleprompt``.
"""

from dspex.programs._teleprompt import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    MIPROv2,
    Teleprompter,
)

__all__ = [
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "LabeledFewShot",
    "MIPROv2",
    "Teleprompter",
]
