"""``dspex.retrievers.Embeddings``: top-k passages of a corpus by embedding similarity.

DSPy's ``dspy.retrievers.Embeddings``. The corpus is embedded once, at
construction, with any embedder (a :class:`dspex.Embedder` or a callable
taking a list of strings). A query is scored against every passage exactly
with numpy (a dot product, cosine with ``normalize=True``); a corpus of at
least ``brute_force_threshold`` passages first narrows the candidates with a
FAISS IVF-PQ index (``pip install faiss-cpu``; dspex does not depend on it),
then re-scores them exactly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from dspex.errors import UsageError
from dspex.programs._prediction import Prediction

__all__ = ["Embeddings", "EmbeddingsWithScores"]

log = logging.getLogger("dspex.retrievers")

Matrix = npt.NDArray[np.float32]
_CONFIG = "config.json"
_VECTORS = "corpus_embeddings.npy"
_FAISS = "faiss_index.bin"
_CONFIG_FIELDS = ("k", "normalize", "corpus", "has_faiss_index")


class Embeddings:
    """Retrieves the ``k`` passages of ``corpus`` most similar to a query.

    ``embedder(texts)`` must return one vector per text. Calling the
    retriever with a query returns a Prediction with ``passages`` (best
    first) and their ``indices`` in the corpus. ``cache`` must stay False,
    as in DSPy: the embedder's own cache covers repeated texts.
    """

    def __init__(  # noqa: PLR0917 - DSPy's positional signature
        self,
        corpus: list[str],
        embedder: Callable[[list[str]], Any],
        k: int = 5,
        callbacks: list[Any] | None = None,
        cache: bool = False,
        brute_force_threshold: int = 20_000,
        normalize: bool = True,
    ) -> None:
        if cache is not False:
            raise UsageError(
                f"Embeddings(cache={cache!r}): retrievers have no cache of their own; leave "
                "cache=False (the Embedder caches embeddings)"
            )
        if isinstance(corpus, str) or not isinstance(corpus, Sequence) or not corpus:
            raise UsageError(
                f"Embeddings(corpus={_short(corpus)}) must be a non-empty list of strings"
            )
        for i, passage in enumerate(corpus):
            if not isinstance(passage, str):
                raise UsageError(
                    f"Embeddings corpus[{i}]={passage!r} is a {type(passage).__name__}; every "
                    "passage must be a string"
                )
        if not callable(embedder):
            raise UsageError(
                f"Embeddings(embedder={embedder!r}) must be callable, e.g. dspex.Embedder(...)"
            )
        _check_k(k, "Embeddings")
        if isinstance(brute_force_threshold, bool) or not isinstance(brute_force_threshold, int):
            raise UsageError(
                f"Embeddings(brute_force_threshold={brute_force_threshold!r}) must be an int"
            )
        self.embedder = embedder
        self.k = k
        self.callbacks = list(callbacks or [])
        self.corpus = list(corpus)
        self.normalize = normalize
        self.corpus_embeddings = self._prepare(self._embed(self.corpus, "corpus"))
        self.index: Any = self._build_faiss() if len(self.corpus) >= brute_force_threshold else None

    def __call__(self, query: str) -> Prediction:
        return self.forward(query)

    def forward(self, query: str) -> Prediction:
        """The top-``k`` passages for ``query`` and their corpus indices."""
        passages, indices, _ = self._search(query)
        return Prediction(passages=passages, indices=indices)

    # -- search -------------------------------------------------------------------

    def _search(self, query: str) -> tuple[list[str], list[int], list[float]]:
        if not isinstance(query, str):
            raise UsageError(f"query={query!r} must be a string")
        q = self._prepare(self._embed([query], "query"))
        if q.shape[1] != self.corpus_embeddings.shape[1]:
            raise UsageError(
                f"the query embedding has {q.shape[1]} dimensions but the corpus's have "
                f"{self.corpus_embeddings.shape[1]}; embed both with the same model"
            )
        k = min(self.k, len(self.corpus))
        if self.index is not None:
            candidates = np.asarray(self.index.search(q, k * 10)[1][0])
            candidates = candidates[candidates >= 0]  # FAISS pads missing hits with -1
        else:
            candidates = np.arange(len(self.corpus))
        scores = self.corpus_embeddings[candidates] @ q[0]
        # A stable sort: equal scores keep corpus order, so results are reproducible.
        order = np.argsort(-scores, kind="stable")[:k]
        top = candidates[order]
        return (
            [self.corpus[i] for i in top],
            [int(i) for i in top],
            [float(s) for s in scores[order]],
        )

    def _embed(self, texts: list[str], what: str) -> Matrix:
        out = np.asarray(self.embedder(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise UsageError(
                f"the embedder returned shape {out.shape} for {len(texts)} {what} text(s); it "
                "must return one vector per text (a 2-D array)"
            )
        return out

    def _prepare(self, vectors: Matrix) -> Matrix:
        if not self.normalize:
            return vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: Matrix = (vectors / np.maximum(norms, 1e-10)).astype(np.float32)
        return normalized

    def _build_faiss(self) -> Any:
        try:
            import faiss  # type: ignore[import-not-found]
        except ImportError as exc:
            raise UsageError(
                f"a corpus of {len(self.corpus)} passages is at or over "
                "brute_force_threshold, which needs FAISS; pip install faiss-cpu, or raise "
                "brute_force_threshold to search exactly"
            ) from exc
        dim = int(self.corpus_embeddings.shape[1])
        partitions = int(2 * math.sqrt(len(self.corpus)))
        quantizer = faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, partitions, 32, 8)
        log.info(
            "training a FAISS index: %d partitions over %d x %d-dim embeddings",
            partitions,
            len(self.corpus),
            dim,
        )
        index.train(self.corpus_embeddings)
        index.add(self.corpus_embeddings)
        index.nprobe = min(16, partitions)
        return index

    # -- saving ---------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the corpus, its embeddings and settings (and a FAISS index) under ``path``.

        DSPy's layout: ``config.json``, ``corpus_embeddings.npy`` and, with an
        index, ``faiss_index.bin``. Never pickled.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "k": self.k,
            "normalize": self.normalize,
            "corpus": self.corpus,
            "has_faiss_index": self.index is not None,
        }
        (folder / _CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        np.save(folder / _VECTORS, self.corpus_embeddings, allow_pickle=False)
        if self.index is not None:
            import faiss

            faiss.write_index(self.index, str(folder / _FAISS))

    def load(self, path: str | Path, embedder: Callable[[list[str]], Any]) -> Embeddings:
        """Replace this retriever's corpus and embeddings with those saved under ``path``."""
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"Embeddings.load: no directory {str(folder)!r}")
        for name in (_CONFIG, _VECTORS):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"Embeddings.load: {str(folder / name)!r} is missing; save with "
                    "Embeddings.save(path) first"
                )
        config = json.loads((folder / _CONFIG).read_text(encoding="utf-8"))
        missing = [f for f in _CONFIG_FIELDS if not isinstance(config, dict) or f not in config]
        if missing:
            raise ValueError(
                f"Embeddings.load: {str(folder / _CONFIG)!r} lacks {missing}; it was not "
                "written by Embeddings.save"
            )
        vectors = np.load(folder / _VECTORS, allow_pickle=False)
        if vectors.ndim != 2 or vectors.shape[0] != len(config["corpus"]):
            raise ValueError(
                f"Embeddings.load: {len(config['corpus'])} passages but embeddings of shape "
                f"{vectors.shape}; the files do not belong together"
            )
        self.k = config["k"]
        self.normalize = config["normalize"]
        self.corpus = list(config["corpus"])
        self.embedder = embedder
        self.corpus_embeddings = vectors.astype(np.float32, copy=False)
        self.index = None
        if config["has_faiss_index"] and (folder / _FAISS).is_file():
            try:
                import faiss
            except ImportError:
                log.warning("Embeddings.load: FAISS is not installed; searching exactly")
            else:
                self.index = faiss.read_index(str(folder / _FAISS))
        return self

    @classmethod
    def from_saved(cls, path: str | Path, embedder: Callable[[list[str]], Any]) -> Embeddings:
        """A retriever loaded from ``path`` without embedding the corpus again."""
        instance = cls.__new__(cls)
        instance.callbacks = []
        return instance.load(path, embedder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.corpus)} passages, k={self.k})"


class EmbeddingsWithScores(Embeddings):
    """:class:`Embeddings` whose Prediction also carries the similarity ``scores``."""

    def forward(self, query: str) -> Prediction:
        passages, indices, scores = self._search(query)
        return Prediction(passages=passages, indices=indices, scores=scores)


def _check_k(k: Any, where: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"{where}(k={k!r}) is invalid; use an int >= 1")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
