"""KNN (nearest training examples by embedding) and KNNFewShot (per-call BootstrapFewShot)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import dspex
from dspex.supervision import which_children
from dspex.teleprompt import KNNFewShot
from dspex.testing import DummyLM

pytestmark = pytest.mark.usefixtures("clean_settings")

WORDS = ["france", "peru", "ocean", "sum"]


class BagOfWords:
    """One dimension per word of WORDS; remembers every text it embedded."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __call__(self, texts: list[str]) -> Any:
        self.texts.extend(texts)
        return np.array([[float(w in t.lower()) for w in WORDS] for t in texts])


def trainset() -> list[dspex.Example]:
    rows = [
        ("capital of France?", "Paris"),
        ("capital of Peru?", "Lima"),
        ("largest ocean?", "Pacific"),
        ("sum of 2 and 2?", "4"),
    ]
    return [dspex.Example(question=q, answer=a, note="x").with_inputs("question") for q, a in rows]


def test_knn_returns_the_nearest_examples_first() -> None:
    vectorizer = BagOfWords()
    knn = dspex.KNN(2, trainset(), vectorizer=vectorizer)
    # each training example is embedded once, from its input fields only
    assert vectorizer.texts == [f"question: {ex.question}" for ex in trainset()]
    nearest = knn(question="Is Peru near the ocean?")
    assert [ex.answer for ex in nearest] == ["Pacific", "Lima"]  # a tie: the later one first
    assert vectorizer.texts[-1] == "question: Is Peru near the ocean?"
    assert [ex.answer for ex in knn(question="France")] == ["Paris", "4"]
    assert len(dspex.KNN(10, trainset(), vectorizer=BagOfWords())(question="sum")) == 4


def test_knn_checks_its_arguments() -> None:
    with pytest.raises(dspex.UsageError, match=r"KNN\(k=0\)"):
        dspex.KNN(0, trainset(), vectorizer=BagOfWords())
    with pytest.raises(dspex.UsageError, match="with_inputs"):
        dspex.KNN(1, [dspex.Example(question="q")], vectorizer=BagOfWords())
    with pytest.raises(dspex.UsageError, match=r"shape \(4,\) for 4 texts"):
        dspex.KNN(1, trainset(), vectorizer=lambda texts: np.zeros(len(texts)))
    with pytest.raises(dspex.UsageError, match="vectorizer"):
        dspex.KNN(1, trainset(), vectorizer="all-MiniLM-L6-v2")
    knn = dspex.KNN(1, trainset(), vectorizer=BagOfWords())
    knn.embedding = lambda texts: np.zeros((len(texts), 3))
    with pytest.raises(dspex.UsageError, match="3 dimensions"):
        knn(question="France")


def test_knn_fewshot_bootstraps_demos_from_the_nearest_examples(start_runtime: Any) -> None:
    rt = start_runtime()
    lm = DummyLM(
        {
            "Spain": {"answer": "Madrid"},  # first: the query names France and Peru too
            "France": {"answer": "Paris"},
            "Peru": {"answer": "Lima"},
            "ocean": {"answer": "Pacific"},
            "sum": {"answer": "4"},
        }
    )
    dspex.configure(lm=lm)
    trees: list[list[str]] = []

    def metric(example: Any, prediction: Any, trace: Any = None) -> bool:
        node = rt.tree().find("BootstrapFewShot")
        trees.append([node.actor_class, *(c.id for c in node.children)])
        return bool(example.answer == prediction.answer)

    optimizer = KNNFewShot(2, trainset(), vectorizer=BagOfWords(), metric=metric)
    student = dspex.Predict("question -> answer")
    program = optimizer.compile(student)
    assert program is not student and isinstance(program, dspex.Predict)
    assert program(question="France or Peru, which is in Spain's language area?").answer == "Madrid"
    last = lm.history[-1]["messages"]
    demos = " ".join(str(m["content"]) for m in last[1:-1])
    assert "capital of Peru" in demos and "capital of France" in demos
    assert "ocean" not in demos and "sum of" not in demos
    # the bootstrap ran under its own coordinator, gone once the call returned
    assert trees and all(ids == ["Coordinator", "workers"] for ids in trees)
    assert which_children(rt.whereis("coordinators"), timeout=5) == []
    assert student.demos == [] and program.demos == []  # demos live only in each call


def test_knn_fewshot_checks_the_bootstrap_options_up_front() -> None:
    with pytest.raises(dspex.UsageError, match="max_bootstraped_demos"):
        KNNFewShot(2, trainset(), vectorizer=BagOfWords(), max_bootstraped_demos=2)
    with pytest.raises(dspex.UsageError, match="max_bootstrapped_demos"):
        KNNFewShot(2, trainset(), vectorizer=BagOfWords(), max_bootstrapped_demos=-1)
