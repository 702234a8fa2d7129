"""DSPy's ``dspy.adapters`` path: ``from dspex.adapters import ChatAdapter``.

The same classes as the top-level names, for DSPy code that imports them from
``dspy.adapters``.
"""

from typing import TYPE_CHECKING, Any

from dspex.programs import Adapter, ChatAdapter, JSONAdapter, Tool, TwoStepAdapter, XMLAdapter

if TYPE_CHECKING:
    from dspex.programs._history import History

__all__ = [
    "Adapter",
    "ChatAdapter",
    "History",
    "JSONAdapter",
    "Tool",
    "TwoStepAdapter",
    "XMLAdapter",
]


def __getattr__(name: str) -> Any:
    # History is a pydantic model: load it (and pydantic) only when asked for.
    if name == "History":
        from dspex.programs._history import History

        return History
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
