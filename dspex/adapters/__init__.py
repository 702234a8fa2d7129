"""DSPy's ``dspy.adapters`` path: ``from dspex.adapters import ChatAdapter``.

The same classes as the top-level names, for DSPy code that imports them from
``dspy.adapters`` (and its custom field types from ``dspy.adapters.types``).
"""

from typing import TYPE_CHECKING, Any

from dspex.programs import Adapter, ChatAdapter, JSONAdapter, Tool, TwoStepAdapter, XMLAdapter

if TYPE_CHECKING:
    from dspex.adapters import types
    from dspex.programs._history import History
    from dspex.programs._types._base import Type
    from dspex.programs._types._media import Audio, File, Image
    from dspex.programs._types._text import Code, Reasoning
    from dspex.programs._types._tool_calls import ToolCallResults, ToolCalls

__all__ = [
    "Adapter",
    "Audio",
    "ChatAdapter",
    "Code",
    "File",
    "History",
    "Image",
    "JSONAdapter",
    "Reasoning",
    "Tool",
    "ToolCallResults",
    "ToolCalls",
    "TwoStepAdapter",
    "Type",
    "XMLAdapter",
    "types",
]

# pydantic models: load them (and pydantic) only when asked for.
_LAZY = frozenset(
    {
        "Audio",
        "Code",
        "File",
        "History",
        "Image",
        "Reasoning",
        "ToolCallResults",
        "ToolCalls",
        "Type",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import dspex.programs

        return getattr(dspex.programs, name)
    if name == "types":
        import importlib

        return importlib.import_module("dspex.adapters.types")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
