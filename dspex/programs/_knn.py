"""``KNN``: the ``k`` training examples nearest to the given inputs (dot product of embeddings)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dspex.errors import UsageError

__all__ = ["KNN"]


def _as_text(pairs: Any) -> str:
    return " | ".join(f"{key}: {value}" for key, value in pairs)


class KNN:
    """``KNN(k, trainset, vectorizer)(question=...)`` -> the ``k`` nearest examples, nearest first.

    Each example is embedded once, as ``"key: value | ..."`` over its input
    fields; a query is embedded the same way from the keyword arguments.
    """

    def __init__(self, k: int, trainset: Sequence[Any], vectorizer: Any) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"KNN(k={k!r}): use an int >= 1")
        self.k = k
        self.trainset = list(trainset)
        self.embedding = vectorizer
        texts = []
        for index, example in enumerate(self.trainset):
            keys = getattr(example, "_input_keys", None)
            if keys is None:
                raise UsageError(
                    f"KNN: trainset[{index}] has no input fields marked; call "
                    ".with_inputs(...) on it, e.g. example.with_inputs('question')"
                )
            texts.append(_as_text((k_, v) for k_, v in example.items() if k_ in keys))
        import numpy as np

        self.trainset_vectors = np.asarray(vectorizer(texts), dtype=np.float32)

    def __call__(self, **inputs: Any) -> list[Any]:
        import numpy as np

        query = np.asarray(self.embedding([_as_text(inputs.items())]), dtype=np.float32)
        scores = np.dot(self.trainset_vectors, query.T).reshape(-1)
        nearest = scores.argsort()[-self.k :][::-1]
        return [self.trainset[int(i)] for i in nearest]
