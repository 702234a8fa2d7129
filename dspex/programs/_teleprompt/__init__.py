"""Optimizers ("teleprompters"): LabeledFewShot, BootstrapFewShot, its random search, MIPROv2,
COPRO, KNNFewShot, Ensemble, BootstrapFewShotWithOptuna, GEPA, SIMBA.

Each compile runs under a coordinator actor in the runtime's tree, which owns
the WorkerPool the teacher's runs are dispatched to (see ``_coordinator``).
"""

from dspex.programs._teleprompt._base import Teleprompter
from dspex.programs._teleprompt._bootstrap import BootstrapFewShot
from dspex.programs._teleprompt._coordinator import Coordinator
from dspex.programs._teleprompt._copro import COPRO
from dspex.programs._teleprompt._ensemble import Ensemble, EnsembledProgram
from dspex.programs._teleprompt._gepa import GEPA
from dspex.programs._teleprompt._knn_fewshot import KNNFewShot
from dspex.programs._teleprompt._labeled import LabeledFewShot
from dspex.programs._teleprompt._mipro import MIPROv2
from dspex.programs._teleprompt._optuna import BootstrapFewShotWithOptuna
from dspex.programs._teleprompt._random_search import BootstrapFewShotWithRandomSearch
from dspex.programs._teleprompt._simba import SIMBA

__all__ = [
    "COPRO",
    "GEPA",
    "SIMBA",
    "BootstrapFewShot",
    "BootstrapFewShotWithOptuna",
    "BootstrapFewShotWithRandomSearch",
    "Coordinator",
    "Ensemble",
    "EnsembledProgram",
    "KNNFewShot",
    "LabeledFewShot",
    "MIPROv2",
    "Teleprompter",
]
