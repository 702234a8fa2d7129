"""DSPy's ``dspy.adapters.types`` path: the custom field types and ``History``."""

from dspex.programs._history import History
from dspex.programs._tool import Tool
from dspex.programs._types._base import Type
from dspex.programs._types._media import Audio, File, Image
from dspex.programs._types._text import Code, Reasoning
from dspex.programs._types._tool_calls import ToolCallResults, ToolCalls

__all__ = [
    "Audio",
    "Code",
    "File",
    "History",
    "Image",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "Type",
]
