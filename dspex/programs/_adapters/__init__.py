"""Adapters: DSPy's prompt formats (chat markers, JSON, XML, two-step) and typed value parsing."""

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.programs._adapters._base import Adapter
    from dspex.programs._adapters._chat import ChatAdapter, JSONAdapter
    from dspex.programs._adapters._two_step import TwoStepAdapter
    from dspex.programs._adapters._xml import XMLAdapter

# public name -> module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "Adapter": "_base",
    "ChatAdapter": "_chat",
    "JSONAdapter": "_chat",
    "TwoStepAdapter": "_two_step",
    "XMLAdapter": "_xml",
}

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter", "TwoStepAdapter", "XMLAdapter"]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
