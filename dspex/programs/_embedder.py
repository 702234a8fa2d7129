"""``Embedder``: texts -> vectors, through a function you give (DSPy's callable form).

``Embedder(fn)`` calls ``fn(list_of_texts)`` in batches of ``batch_size`` and
stacks the results into one float32 ``numpy`` array (one row per text). A
hosted embedding model named by a string (``"openai/text-embedding-3-small"``)
is not supported yet: pass a callable (e.g. a sentence-transformers
``model.encode``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dspex.errors import UsageError

__all__ = ["Embedder"]


class Embedder:
    """Embeds texts with ``model``, a callable taking a list of strings."""

    def __init__(self, model: Any, batch_size: int = 200, caching: bool = True, **kwargs: Any):
        if isinstance(model, str):
            raise UsageError(
                f"Embedder({model!r}): hosted embedding models are not supported yet; pass a "
                "callable that embeds a list of texts, e.g. Embedder(SentenceTransformer(...)"
                ".encode)"
            )
        if not callable(model):
            raise UsageError(f"Embedder(model={model!r}): pass a callable taking a list of texts")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"Embedder(batch_size={batch_size!r}): use an int >= 1")
        self.model: Callable[..., Any] = model
        self.batch_size = batch_size
        self.caching = caching  # DSPy's flag; a callable's results are not cached
        self.default_kwargs = kwargs

    def __call__(
        self, inputs: str | Sequence[str], batch_size: int | None = None, **kwargs: Any
    ) -> Any:
        """One vector for a string, or a 2-D array with a row per text for a list."""
        import numpy as np

        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        size = batch_size or self.batch_size
        merged = {**self.default_kwargs, **kwargs}
        rows = [
            np.asarray(self.model(texts[i : i + size], **merged), dtype=np.float32)
            for i in range(0, len(texts), size)
        ]
        vectors = np.concatenate(rows, axis=0) if rows else np.zeros((0, 0), dtype=np.float32)
        return vectors[0] if single else vectors
