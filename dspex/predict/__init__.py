"""DSPy's ``dspy.predict`` path: the predictor modules by their DSPy import location."""

from dspex.programs import (
    BestOfN,
    ChainOfThought,
    MultiChainComparison,
    Parallel,
    Predict,
    ReAct,
    Refine,
    majority,
)
from dspex.programs._module import Parameter

__all__ = [
    "BestOfN",
    "ChainOfThought",
    "MultiChainComparison",
    "Parallel",
    "Parameter",
    "Predict",
    "ReAct",
    "Refine",
    "majority",
]
