"""Retrieval: ``dspex.retrievers.Embeddings``, ``dspex.Retrieve`` and ``dspex.ColBERTv2``.

Embeddings run on a deterministic in-process embedder and, end to end, on
``dspex.Embedder`` against the fake OpenAI server; ColBERTv2 talks to the
fake ColBERTv2 server (real HTTP on 127.0.0.1).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_helpers import SECRET, StartRuntime

import dspex
from dspex.errors import RetrieverError, UsageError
from dspex.retrievers import Embeddings, EmbeddingsWithScores, Retrieve
from dspex.testing import FakeColBERTv2, FakeOpenAI

pytestmark = pytest.mark.usefixtures("clean_settings")

CORPUS = [
    "The cat sat on the mat.",
    "The dog barked at the mailman.",
    "Birds fly in the sky.",
]
KEYWORDS = ("cat", "dog", "bird")


def keyword_embedder(texts: list[str]) -> np.ndarray:
    """One axis per keyword: a text's vector counts the keywords it mentions."""
    return np.array([[float(w in t.lower()) for w in KEYWORDS] for t in texts], dtype=np.float32)


# -- Embeddings ------------------------------------------------------------------------------


def test_the_most_similar_passages_come_first() -> None:
    retriever = Embeddings(CORPUS, keyword_embedder, k=1)
    result = retriever("Where did the dog bark?")
    assert result.passages == ["The dog barked at the mailman."] and result.indices == [1]
    two = Embeddings(CORPUS, keyword_embedder, k=2)("cats and birds")
    assert set(two.passages) == {CORPUS[0], CORPUS[2]}
    assert Embeddings(CORPUS, keyword_embedder, k=10)("cat").indices[0] == 0  # k > corpus
    assert len(Embeddings(CORPUS, keyword_embedder, k=10)("cat").indices) == 3


def test_scores_and_normalize() -> None:
    scored = EmbeddingsWithScores(CORPUS, keyword_embedder, k=2)("the dog")
    assert scored.indices[0] == 1 and scored.scores[0] == pytest.approx(1.0)
    assert scored.scores[1] == pytest.approx(0.0)
    # Without normalising, the raw dot product ranks a longer vector higher.
    corpus = ["short", "long"]

    def lengths(texts: list[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if t == "short" else [2.0, 2.0] for t in texts] or [[1.0, 0.0]])

    raw = EmbeddingsWithScores(corpus, lengths, k=2, normalize=False)("short")
    cosine = EmbeddingsWithScores(corpus, lengths, k=2)("short")
    assert raw.passages[0] == "long" and raw.scores[0] == pytest.approx(2.0)
    assert cosine.passages[0] == "short" and cosine.scores[0] == pytest.approx(1.0)


def test_concurrent_queries_get_their_own_answers() -> None:
    retriever = Embeddings(CORPUS, keyword_embedder, k=1)
    queries = ["a cat", "a dog", "a bird"] * 10
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda q: retriever(q).passages[0], queries))
    assert results == [CORPUS[0], CORPUS[1], CORPUS[2]] * 10


def test_save_load_and_from_saved(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return keyword_embedder(texts)

    original = Embeddings(CORPUS, counting, k=2, normalize=False)
    original.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == [
        "config.json",
        "corpus_embeddings.npy",
    ]
    config = json.loads((tmp_path / "index" / "config.json").read_text())
    assert config == {"k": 2, "normalize": False, "corpus": CORPUS, "has_faiss_index": False}
    calls.clear()
    loaded = Embeddings.from_saved(tmp_path / "index", counting)
    assert calls == []  # the corpus is not embedded again
    assert (loaded.k, loaded.normalize, loaded.corpus, loaded.index) == (2, False, CORPUS, None)
    assert loaded("a dog").indices == original("a dog").indices
    other = Embeddings(["x"], keyword_embedder).load(tmp_path / "index", keyword_embedder)
    assert other.corpus == CORPUS and other.embedder is keyword_embedder
    with pytest.raises(FileNotFoundError):
        Embeddings.from_saved(tmp_path / "missing", counting)
    (tmp_path / "index" / "config.json").write_text('{"k": 2}')
    with pytest.raises(ValueError, match="lacks"):
        Embeddings.from_saved(tmp_path / "index", counting)


@pytest.mark.skipif(importlib.util.find_spec("faiss") is not None, reason="FAISS installed")
def test_a_large_corpus_without_faiss_says_how_to_fix_it() -> None:
    with pytest.raises(UsageError, match=r"pip install faiss-cpu, or raise brute_force_threshold"):
        Embeddings(CORPUS, keyword_embedder, brute_force_threshold=3)
    assert Embeddings(CORPUS, keyword_embedder, brute_force_threshold=4).index is None


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([], keyword_embedder), {}, r"corpus=\[\]\) must be a non-empty list"),
        (("text", keyword_embedder), {}, r"corpus='text'"),
        ((["a", 1], keyword_embedder), {}, r"corpus\[1\]=1 is a int"),
        ((CORPUS, "embedder"), {}, r"embedder='embedder'\) must be callable"),
        ((CORPUS, keyword_embedder), {"k": 0}, r"k=0"),
        ((CORPUS, keyword_embedder), {"cache": True}, r"cache=True"),
        ((CORPUS, lambda t: [[1.0]]), {}, r"one vector per text"),
    ],
)
def test_bad_arguments_name_the_field(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        Embeddings(*args, **kwargs)


def test_embeddings_over_an_embedder_model(start_runtime: StartRuntime) -> None:
    start_runtime()
    with FakeOpenAI(api_key=SECRET) as fake:
        embedder = dspex.Embedder("openai/emb", api_base=fake.url, api_key=SECRET)
        retriever = dspex.retrievers.Embeddings(CORPUS, embedder, k=1)
        assert fake.request_count == 1  # the corpus, in one batch
        assert retriever("which animal barked at the mailman").passages == [CORPUS[1]]
        assert [len(r.json["input"]) for r in fake.requests] == [3, 1]


# -- Retrieve ---------------------------------------------------------------------------------


def test_retrieve_asks_the_configured_rm_for_k_passages() -> None:
    asked: list[tuple[str, int]] = []

    def rm(query: str, k: int) -> list[Any]:
        asked.append((query, k))
        return [dspex.programs.dotdict(long_text=f"{query} #{i}") for i in range(k)]

    dspex.configure(rm=rm)
    assert Retrieve()("q").passages == ["q #0", "q #1", "q #2"]
    assert Retrieve(k=1)("q").passages == ["q #0"]
    assert Retrieve(k=1)("q", k=2).passages == ["q #0", "q #1"]
    assert asked == [("q", 3), ("q", 1), ("q", 2)]
    with dspex.context(rm=lambda query, k: "just one"):
        assert dspex.Retrieve()("x").passages == ["just one"]


def test_retrieve_without_an_rm_says_how_to_configure_one() -> None:
    with pytest.raises(UsageError, match=r"dspex.configure\(rm=\.\.\.\)"):
        Retrieve()("q")


def test_retrieve_state_is_saved_and_loaded_with_the_program(tmp_path: Path) -> None:
    class RAG(dspex.Module):
        def __init__(self) -> None:
            super().__init__()
            self.retrieve = Retrieve(k=3)

        def forward(self, question: str) -> Any:
            return self.retrieve(question)

    program = RAG()
    program.retrieve.k = 5
    program.save(tmp_path / "rag.json")
    state = json.loads((tmp_path / "rag.json").read_text())
    assert state["retrieve"] == {"k": 5}
    fresh = RAG()
    fresh.load(tmp_path / "rag.json")
    assert fresh.retrieve.k == 5
    assert copy.deepcopy(fresh).retrieve.k == 5
    with pytest.raises(UsageError, match="unknown keys"):
        fresh.retrieve.load_state({"k": 2, "demos": []})


def test_retrieve_fires_module_callbacks() -> None:
    seen: list[str] = []

    class Hook(dspex.utils.BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            # DSPy's binding of __call__(*args, **kwargs)
            seen.append(f"start:{inputs['kwargs']['query']}")

        def on_module_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            seen.append(f"end:{outputs.passages}")

    dspex.configure(rm=lambda query, k: [query])
    Retrieve(callbacks=[Hook()])(query="hello")
    assert seen == ["start:hello", "end:['hello']"]


# -- ColBERTv2 -------------------------------------------------------------------------------


@pytest.fixture
def colbert() -> Iterator[FakeColBERTv2]:
    with FakeColBERTv2(CORPUS) as server:
        yield server


def test_colbert_get_and_post(colbert: FakeColBERTv2) -> None:
    rm = dspex.ColBERTv2(url=colbert.url)
    top = rm("the dog barked", k=2)
    assert [p.long_text for p in top] == [CORPUS[1], CORPUS[0]]
    assert top[0]["pid"] == 1 and top[0].text == CORPUS[1] and top[0].score == 3.0
    assert rm("the dog barked", k=2, simplify=True) == [CORPUS[1], CORPUS[0]]
    assert [s.method for s in colbert.searches] == ["GET"]  # the second call was cached
    post = dspex.ColBERTv2(url=colbert.url, post_requests=True)
    posted = post("birds in the sky", k=1)
    assert posted[0].text == CORPUS[2] and "long_text" not in posted[0]  # DSPy's POST form
    assert colbert.searches[-1].method == "POST" and colbert.searches[-1].k == 1
    rm.close()
    post.close()


def test_colbert_port_argument_and_retrieve(colbert: FakeColBERTv2) -> None:
    host, _, rest = colbert.url.rpartition(":")
    port = int(rest.split("/", 1)[0])
    rm = dspex.ColBERTv2(url=host, port=port)  # the server at the root path
    assert rm.url == f"{host}:{port}"
    dspex.configure(rm=rm)
    assert dspex.Retrieve(k=1)("a cat on a mat").passages == [CORPUS[0]]
    assert colbert.searches[-1].k == 1
    rm.close()


def test_colbert_failures_raise_retriever_errors(colbert: FakeColBERTv2) -> None:
    rm = dspex.ColBERTv2(url=colbert.url, timeout=0.5)
    colbert.error = "connection failed"
    with pytest.raises(ValueError, match="connection failed"):  # as in DSPy
        rm("q1")
    colbert.error, colbert.status = None, 503
    with pytest.raises(RetrieverError, match="HTTP 503") as info:
        rm("q2")
    assert info.value.status == 503 and info.value.url == colbert.url
    colbert.status, colbert.raw = None, b"<html>oops</html>"
    with pytest.raises(RetrieverError, match="not JSON"):
        rm("q3")
    colbert.raw, colbert.hang = None, True
    with pytest.raises(RetrieverError, match=r"no answer within 0.5s"):
        rm("q4")
    rm.close()
    colbert.hang = False
    with pytest.raises(RetrieverError, match="is the server running"):
        dspex.ColBERTv2(url="http://127.0.0.1:9", timeout=2)("q")


def test_colbert_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError, match=r"url='localhost:8893'"):
        dspex.ColBERTv2(url="localhost:8893")
    rm = dspex.ColBERTv2(url="http://127.0.0.1:9")
    with pytest.raises(UsageError, match=r"k=0 is invalid"):
        rm("q", k=0)
    with pytest.raises(UsageError, match=r"timeout=0"):
        dspex.ColBERTv2(timeout=0)


def test_dotdict_reads_keys_as_attributes() -> None:
    d = dspex.programs.dotdict(text="t", score=1.0)
    assert d.text == "t" and d["score"] == 1.0
    d.extra = 2
    assert d == {"text": "t", "score": 1.0, "extra": 2}
    with pytest.raises(AttributeError, match="no key 'missing'"):
        _ = d.missing
    assert copy.deepcopy(d) == d and isinstance(copy.deepcopy(d), dspex.programs.dotdict)


def test_dspy_import_paths() -> None:
    from dspex.clients import Embedder
    from dspex.dsp.colbertv2 import ColBERTv2
    from dspex.dsp.utils import dotdict

    assert Embedder is dspex.Embedder and ColBERTv2 is dspex.ColBERTv2
    assert dotdict is dspex.programs.dotdict and dspex.dsp.utils.dotdict is dotdict
    assert dspex.clients.LM is dspex.LM
    assert dspex.retrievers.Retrieve is dspex.Retrieve
    assert dspex.Embeddings is dspex.retrievers.Embeddings
