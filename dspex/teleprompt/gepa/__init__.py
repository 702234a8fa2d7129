"""DSPy's ``dspy.teleprompt.gepa`` path: ``GEPA``, its default proposer and result record."""

from dspex.programs._teleprompt import GEPA
from dspex.programs._teleprompt._gepa import DspyGEPAResult
from dspex.programs._teleprompt._gepa_adapter import InstructionProposer

__all__ = ["GEPA", "DspyGEPAResult", "InstructionProposer"]
