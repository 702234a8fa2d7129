"""``Embedder`` (callable form), ``KNN`` and ``KNNFewShot``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dspex
from dspex.programs import settings
from dspex.teleprompt import KNNFewShot
from dspex.testing import DummyLM, DummyVectorizer


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    yield
    settings.reset()


def trainset() -> list[dspex.Example]:
    rows = [
        ("What is the capital of France?", "Paris"),
        ("What is the largest ocean?", "Pacific"),
        ("What is 2+2?", "4"),
    ]
    return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in rows]


def test_embedder_batches_a_callable() -> None:
    seen: list[int] = []

    def embed(texts: list[str]) -> list[list[float]]:
        seen.append(len(texts))
        return [[float(len(t)), 1.0] for t in texts]

    vectors = dspex.Embedder(embed, batch_size=2)(["a", "bb", "ccc"])
    assert vectors.shape == (3, 2) and seen == [2, 1]
    assert dspex.Embedder(embed)("hello").tolist() == [5.0, 1.0]
    # Model ids are embedded through the LM clients (tests/test_embedder.py);
    # a provider without an embeddings endpoint is refused when built.
    with pytest.raises(dspex.UsageError, match="has no embeddings endpoint"):
        dspex.Embedder("anthropic/claude-test")


def test_knn_returns_the_nearest_examples_first() -> None:
    knn = dspex.KNN(2, trainset(), vectorizer=dspex.Embedder(DummyVectorizer()))
    nearest = knn(question="What is the capital of Spain?")
    assert nearest[0].answer == "Paris"
    assert len(nearest) == 2 and knn.k == 2 and len(knn.trainset) == 3


def test_knn_fewshot_bootstraps_demos_from_the_nearest_examples() -> None:
    # The LM answers each training question correctly, so every neighbour bootstraps.
    lm = DummyLM(
        {
            "France": {"answer": "Paris"},
            "ocean": {"answer": "Pacific"},
            "2+2": {"answer": "4"},
            "Spain": {"answer": "Madrid"},
        }
    )
    dspex.configure(lm=lm)
    optimizer = KNNFewShot(
        1,
        trainset(),
        vectorizer=dspex.Embedder(DummyVectorizer()),
        metric=lambda ex, pred, trace=None: ex.answer == pred.answer,
    )
    student = dspex.Predict("question -> answer")
    program = optimizer.compile(student)
    assert program is not student
    assert program(question="What is the capital of Spain?").answer == "Madrid"
    last = lm.history[-1]["messages"]
    assert "capital of France" in " ".join(str(m["content"]) for m in last[1:-1])  # the demo
    assert student.demos == []
