"""DSPy's ``dspy.adapters`` path: ``from dspex.adapters import ChatAdapter``.

The same classes as the top-level names, for DSPy code that imports them from
``dspy.adapters``.
"""

from dspex.programs import Adapter, ChatAdapter, JSONAdapter, XMLAdapter

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter", "XMLAdapter"]
