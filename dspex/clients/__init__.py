"""DSPy's ``dspy.clients`` path: ``from dspex.clients import Embedder, LM``.

Re-exports of the LM stack's public names; they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.actors._lm._embedder import Embedder
    from dspex.actors._lm._model import LM

_LAZY: dict[str, str] = {
    "Embedder": "dspex.actors._lm._embedder",
    "LM": "dspex.actors._lm._model",
}

__all__ = ["LM", "Embedder"]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
