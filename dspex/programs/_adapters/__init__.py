"""Adapters: DSPy's prompt formats (chat markers, JSON, XML, two-step) and typed value parsing."""

from dspex.programs._adapters._base import Adapter
from dspex.programs._adapters._chat import ChatAdapter, JSONAdapter
from dspex.programs._adapters._two_step import TwoStepAdapter
from dspex.programs._adapters._xml import XMLAdapter

__all__ = ["Adapter", "ChatAdapter", "JSONAdapter", "TwoStepAdapter", "XMLAdapter"]
