"""DSPy's ``dspy.primitives.base_module`` path: ``BaseModule`` and the logger its state I/O uses."""

from dspex.programs._module import BaseModule
from dspex.programs._state import logger

__all__ = ["BaseModule", "logger"]
