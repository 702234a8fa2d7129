"""``KNN``: the ``k`` training examples nearest to the given inputs (dot product of embeddings)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from dspex.errors import UsageError

__all__ = ["KNN"]


def _as_text(pairs: Iterable[tuple[str, Any]]) -> str:
    return " | ".join(f"{key}: {value}" for key, value in pairs)


def _vectors(vectorizer: Callable[[list[str]], Any], texts: list[str]) -> npt.NDArray[np.float32]:
    """``vectorizer(texts)`` as a float32 matrix with one row per text, or a clear error."""
    matrix = np.asarray(vectorizer(texts), dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(texts):
        raise UsageError(
            f"KNN: the vectorizer returned shape {matrix.shape} for {len(texts)} texts; it must "
            "map a list of strings to one vector per string (a 2-D array), e.g. "
            "dspex.Embedder(model.encode)"
        )
    return matrix


class KNN:
    """``KNN(k, trainset, vectorizer)(question=...)`` -> the ``k`` nearest examples, nearest first.

    Each example is embedded once, as ``"key: value | ..."`` over its input
    fields; a query is embedded the same way from the keyword arguments.
    ``vectorizer`` is a :class:`dspex.Embedder` or any callable mapping a list
    of strings to a 2-D array. Ties keep the later training example first,
    as DSPy's ordering does.
    """

    def __init__(self, k: int, trainset: Sequence[Any], vectorizer: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"KNN(k={k!r}): use an int >= 1 (how many neighbours to return)")
        if not callable(vectorizer):
            raise UsageError(
                f"KNN(vectorizer={vectorizer!r}): pass a callable that embeds a list of "
                "strings, e.g. dspex.Embedder(model.encode)"
            )
        self.k = k
        self.trainset = list(trainset)
        self.embedding = vectorizer
        if not self.trainset:
            raise UsageError("KNN(trainset=[]): give at least one training example")
        texts = []
        for index, example in enumerate(self.trainset):
            keys = getattr(example, "_input_keys", None)
            if keys is None:
                raise UsageError(
                    f"KNN: trainset[{index}] has no input fields marked; call "
                    ".with_inputs(...) on it, e.g. example.with_inputs('question')"
                )
            texts.append(_as_text((key, value) for key, value in example.items() if key in keys))
        self.trainset_vectors = _vectors(vectorizer, texts)

    def __call__(self, **inputs: Any) -> list[Any]:
        query = _vectors(self.embedding, [_as_text(inputs.items())])
        if query.shape[1] != self.trainset_vectors.shape[1]:
            raise UsageError(
                f"KNN: the query vector has {query.shape[1]} dimensions, the training vectors "
                f"{self.trainset_vectors.shape[1]}; use the same vectorizer for both"
            )
        scores = self.trainset_vectors @ query[0]
        # stable ascending sort, read from the end: best first, later examples first on ties
        nearest = np.argsort(scores, kind="stable")[::-1][: self.k]
        return [self.trainset[int(i)] for i in nearest]
