"""DSPy's ``dspy.teleprompt`` path: ``from dspex.teleprompt import BootstrapFewShot``.

The same classes as the top-level names, for DSPy code that imports its
optimizers from ``dspy.teleprompt``. MIPROv2 is not implemented yet.
"""

from dspex.programs._teleprompt import (
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    LabeledFewShot,
    Teleprompter,
)

__all__ = [
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "LabeledFewShot",
    "Teleprompter",
]
