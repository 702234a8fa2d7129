"""DSPy's ``dspy.retrievers`` path: ``from dspex.retrievers import Embeddings``.

The retrievers live in the programs layer; they load on first use (numpy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.programs._retrieve import Retrieve
    from dspex.programs._retrievers import Embeddings, EmbeddingsWithScores

_LAZY: dict[str, str] = {
    "Embeddings": "dspex.programs._retrievers",
    "EmbeddingsWithScores": "dspex.programs._retrievers",
    "Retrieve": "dspex.programs._retrieve",
}

__all__ = ["Embeddings", "EmbeddingsWithScores", "Retrieve"]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
