"""DSPy's ``dspy.teleprompt`` path: ``from dspex.teleprompt import BootstrapFewShot``.

The same classes as the top-level names, for DSPy code that imports its
optimizers from ``dspy.teleprompt``.
"""

from dspex.programs._teleprompt import (
    COPRO,
    GEPA,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithOptuna,
    BootstrapFewShotWithRandomSearch,
    Ensemble,
    KNNFewShot,
    LabeledFewShot,
    MIPROv2,
    Teleprompter,
)

BootstrapRS = BootstrapFewShotWithRandomSearch
"""DSPy's short name for :class:`BootstrapFewShotWithRandomSearch`."""

__all__ = [
    "COPRO",
    "GEPA",
    "SIMBA",
    "BootstrapFewShot",
    "BootstrapFewShotWithOptuna",
    "BootstrapFewShotWithRandomSearch",
    "BootstrapRS",
    "Ensemble",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPROv2",
    "Teleprompter",
]
