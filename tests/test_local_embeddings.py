"""``Embedder("local/smollm2")``: the bundled model embeds offline.

It calls the real model through a second llama.cpp server process started
with ``--embedding True`` (the chat server is left as it is), one input per
request, token vectors averaged. Each test uses a runtime of its own, so the
servers it starts are stopped with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import runtime_starter

import dspex
from dspex.supervision import which_children

pytestmark = pytest.mark.local_model

CORPUS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply on Monday.",
    "The recipe needs two eggs and flour.",
]


def test_the_local_model_embeds_and_retrieves(tmp_path: Path) -> None:
    with runtime_starter(tmp_path) as start:
        rt = start()
        embedder = dspex.Embedder("local/smollm2")
        vectors = embedder(CORPUS)
        assert vectors.shape[0] == 3 and vectors.shape[1] >= 64
        assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
        assert not np.allclose(vectors[0], vectors[1])  # different texts, different vectors
        np.testing.assert_allclose(embedder(CORPUS[0]), vectors[0], rtol=1e-5)  # cached
        ids = [c.id for c in which_children(rt.whereis("lms"))]
        assert "local:smollm2:embedding" in ids  # its own server process
        retriever = dspex.retrievers.Embeddings(CORPUS, embedder, k=1)
        # The same text is its own nearest neighbour, whatever the model's quality.
        assert retriever(CORPUS[1]).indices == [1]


def test_chat_and_embeddings_side_by_side(tmp_path: Path) -> None:
    with runtime_starter(tmp_path) as start:
        start()
        lm = dspex.LM("local/smollm2", temperature=0.0, max_tokens=8, cache=False)
        embedder = dspex.Embedder("local/smollm2", caching=False)
        first = lm("Say hello.")
        vector = embedder("hello")
        assert isinstance(first[0], str) and vector.ndim == 1
        assert lm("Say hello.") == first  # the chat server answers as before (greedy)
