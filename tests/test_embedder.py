"""``dspex.Embedder``: DSPy's call semantics, through the LM client machinery.

Model ids talk to the fake OpenAI server's ``/v1/embeddings`` (real HTTP on
127.0.0.1): batching, the response cache, retries, the llama.cpp adaptation
(one input per request, token vectors averaged). Callables are called per
batch and memoised.
"""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from runtime_helpers import SECRET, StartRuntime

import dspex
from dspex.actors._cache_store import decode_response, encode_response
from dspex.actors._lm._cache_key import request_key
from dspex.actors._lm._providers import EmbeddingsProvider, resolve_provider
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import AuthenticationError, LMError, ProviderError, UsageError
from dspex.supervision import VirtualClock
from dspex.testing import FakeOpenAI, Fault
from dspex.testing._fake_openai_routes import bag_of_words


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET) as server:
        yield server


def make(fake: FakeOpenAI, **kwargs: Any) -> dspex.Embedder:
    return dspex.Embedder(
        "openai/text-embedding-3-small", api_base=fake.url, api_key=SECRET, **kwargs
    )


# -- call semantics --------------------------------------------------------------------


def test_a_string_gives_a_vector_and_a_list_a_matrix(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    embedder = make(fake)
    one = embedder("the cat sat")
    assert one.shape == (16,) and one.dtype == np.float32
    np.testing.assert_allclose(one, bag_of_words("the cat sat"))
    many = embedder(["the cat sat", "a dog barked"])
    assert many.shape == (2, 16) and many.dtype == np.float32
    np.testing.assert_allclose(many[1], bag_of_words("a dog barked"))
    [first, second] = fake.requests
    assert first.path == "/v1/embeddings" and first.api_key_present
    assert first.json == {"model": "text-embedding-3-small", "input": ["the cat sat"]}
    assert second.json["input"] == ["the cat sat", "a dog barked"]


def test_inputs_are_sent_in_batches_of_batch_size(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    texts = [f"text number {i}" for i in range(7)]
    out = make(fake, batch_size=3)(texts)
    assert out.shape == (7, 16)
    assert [len(r.json["input"]) for r in fake.requests] == [3, 3, 1]
    for i, text in enumerate(texts):  # rows stay in input order across batches
        np.testing.assert_allclose(out[i], bag_of_words(text))
    make(fake)(texts, batch_size=5, caching=False)  # per call, as in DSPy
    assert [len(r.json["input"]) for r in fake.requests[3:]] == [5, 2]


def test_default_kwargs_are_sent_and_call_kwargs_override_them(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    # Settings' temperature/max_tokens are chat parameters: never sent here.
    dspex.configure(temperature=0.5, max_tokens=10)
    embedder = make(fake, dimensions=4)
    assert embedder("a b").shape == (4,)
    assert embedder("a b", dimensions=8).shape == (8,)
    assert [r.json.get("dimensions") for r in fake.requests] == [4, 8]
    assert all("temperature" not in r.json and "max_tokens" not in r.json for r in fake.requests)
    assert all("model_type" not in r.json for r in fake.requests)  # keyed, never sent


# -- cache ----------------------------------------------------------------------------------


def test_batches_are_cached_and_caching_false_skips_the_cache(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    embedder = make(fake)
    first = embedder(["alpha beta", "gamma"])
    again = embedder(["alpha beta", "gamma"])
    np.testing.assert_array_equal(first, again)
    assert fake.request_count == 1
    embedder(["alpha beta", "gamma"], caching=False)
    assert fake.request_count == 2
    no_cache = make(fake, caching=False)
    no_cache(["alpha beta", "gamma"])
    assert fake.request_count == 3


def test_the_cache_key_separates_embeddings_from_chat_with_the_same_text() -> None:
    messages = ({"role": "user", "content": "hello"},)
    chat = LMRequest("openai/m", messages, {})
    embed = LMRequest("openai/m", messages, {"model_type": "embeddings"})
    assert request_key(chat, None) != request_key(embed, None)
    # chat keys keep their bytes: model_type is only ever added for other APIs
    assert request_key(chat, None) == request_key(LMRequest("openai/m", messages), None)


def test_cached_vectors_survive_the_disk_encoding() -> None:
    response = LMResponse((), Usage(3, 0), "m", embeddings=((0.5, -1.0), (2.0, 0.0)))
    decoded = decode_response(encode_response(response))
    assert decoded.embeddings == response.embeddings and decoded.cache_hit
    chat = LMResponse((Completion("hi", "stop"),), Usage(1, 1), "m")
    assert b'"e"' not in encode_response(chat)  # chat entries keep their old bytes
    assert decode_response(encode_response(chat)).completions == chat.completions
    reasoned = LMResponse(
        (Completion("hi", "stop", reasoning_content="because"),), Usage(1, 1), "m"
    )
    assert decode_response(encode_response(reasoned)).completions[0].reasoning_content == "because"


# -- resilience and errors --------------------------------------------------------------


def test_a_failed_batch_is_retried(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    rt = start_runtime(lm_client={"num_retries": 2, "backoff_base": 0.01, "backoff_max": 0.01})
    embedder = make(fake)
    fake.schedule = [Fault.error(503), Fault.drop(), None]
    assert embedder(["x y"]).shape == (1, 16)
    assert fake.request_count == 3
    stats = embedder.handle(rt).stats()
    assert stats.retries == 2 and stats.successes == 1
    assert stats.prompt_tokens == 2  # the server's usage is metered


def test_errors_are_translated_and_the_key_never_shows(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(lm_client={"num_retries": 0})
    bad_key = dspex.Embedder("openai/e", api_base=fake.url, api_key="sk-wrong-key-123456789")
    with pytest.raises(AuthenticationError) as info:
        bad_key("text")
    assert "sk-wrong-key-123456789" not in str(info.value)
    with pytest.raises(LMError, match="HTTP 400 request rejected"):
        make(fake)([""])  # the API refuses an empty input
    embedder = make(fake)
    assert SECRET not in repr(embedder) and SECRET not in str(pickle.dumps(embedder))
    assert pickle.loads(pickle.dumps(embedder))._api_key is None


def test_a_reply_with_the_wrong_number_of_vectors_fails_clearly(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(lm_client={"num_retries": 0})
    body = {"object": "list", "data": [{"index": 0, "embedding": [1.0]}], "model": "m"}
    fake.reply = lambda _request: {"body": body}
    with pytest.raises(ProviderError, match="2 inputs gave 1 embeddings"):
        make(fake)(["one", "two"])


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((123,), {}, r"Embedder\(model=123\) must be a model id"),
        (("anthropic/claude",), {}, r"'anthropic' has no embeddings endpoint"),
        (("gpt-4",), {}, r"Embedder\(model='gpt-4'\)"),
        (("openai/e",), {"batch_size": 0}, r"batch_size=0"),
        (("openai/e",), {"num_retries": -1}, r"num_retries=-1"),
    ],
)
def test_bad_construction_names_the_field(
    args: tuple[Any, ...], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        dspex.Embedder(*args, **kwargs)


def test_bad_inputs_name_the_value() -> None:
    embedder = dspex.Embedder(lambda texts: [[0.0]] * len(texts))
    with pytest.raises(UsageError, match=r"inputs\[1\]=3 is a int"):
        embedder(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError):  # DSPy's tests expect a ValueError
        embedder(None)  # type: ignore[arg-type]


# -- local llama.cpp server adaptation ----------------------------------------------------


def test_llama_cpp_token_vectors_are_averaged_one_input_per_request(
    start_runtime: StartRuntime,
) -> None:
    start_runtime(lm_client={"num_retries": 0})
    with FakeOpenAI(embeddings_style="llama_cpp") as server:
        plain = dspex.Embedder("openai/local", api_base=server.url, api_key="x")
        with pytest.raises(ProviderError, match="one vector per token"):
            plain(["cat"])
        with pytest.raises(ProviderError, match="llama_decode returned -1"):
            plain(["cat", "dog"])
        # What the local model's client uses (LOCAL_EMBEDDINGS): fan out and pool.
        provider, _ = resolve_provider("openai/m", api="embeddings", max_inputs=1, pool="mean")
        assert isinstance(provider, EmbeddingsProvider)
        request = LMRequest(
            "openai/m",
            ({"role": "user", "content": "a"}, {"role": "user", "content": "b c"}),
            {"model_type": "embeddings"},
        )
        assert [len(r.messages) for r in provider.split(request)] == [1, 1]
        body = json.dumps({"data": [{"index": 0, "embedding": [[1.0, 2.0], [3.0, 6.0]]}]})
        parsed = provider.parse(200, {}, body.encode(), model="openai/m")
        assert parsed.embeddings == ((2.0, 4.0),)


# -- callables ------------------------------------------------------------------------------


def test_a_callable_is_called_per_batch_and_memoised() -> None:
    calls: list[list[str]] = []

    def embed(texts: list[str], scale: float = 1.0) -> Any:
        calls.append(list(texts))
        return np.array([[len(t) * scale, 1.0] for t in texts])

    embedder = dspex.Embedder(embed, batch_size=2, scale=2.0)
    out = embedder(["a", "bb", "ccc"])
    assert out.dtype == np.float32 and out.tolist() == [[2.0, 1.0], [4.0, 1.0], [6.0, 1.0]]
    assert calls == [["a", "bb"], ["ccc"]]
    embedder(["a", "bb", "ccc"])
    assert len(calls) == 2  # memoised per batch
    embedder(["a", "bb", "ccc"], caching=False)
    assert len(calls) == 4
    assert embedder("a", scale=3.0).tolist() == [3.0, 1.0]  # kwargs reach the callable


def test_acall_returns_the_same_vectors(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    start_runtime()
    embedder = make(fake)
    got = asyncio.run(embedder.acall(["one two", "three"]))
    np.testing.assert_allclose(got, [bag_of_words("one two"), bag_of_words("three")])
    single = asyncio.run(dspex.Embedder(lambda t: [[1.0, 2.0]] * len(t)).acall("x"))
    assert single.tolist() == [1.0, 2.0]


def test_embedding_calls_are_metered_but_kept_out_of_the_history(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    embedder = make(fake)
    embedder(["one", "two"])
    lm = dspex.LM("openai/text-embedding-3-small", api_base=fake.url, api_key=SECRET)
    fake.reply = "chat answer"
    lm("a chat call")
    history = rt.history(10)
    assert [list(entry.outputs) for entry in history] == [["chat answer"]]
    model = rt.metrics()["models"]["openai/text-embedding-3-small"]
    assert model["requests"] == 2 and model["prompt_tokens"] >= 2


def test_batches_are_rate_limited_by_rpm(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    clock = VirtualClock()
    start_runtime(clock=clock)
    embedder = make(fake, rpm=1, caching=False)
    embedder("first")  # the bucket's one request this minute
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(embedder, "second")
        assert clock.wait_for_sleepers(1, timeout=10)  # held by the limiter, not sent
        assert fake.request_count == 1 and not second.done()
        clock.advance(60.0)
        assert second.result(timeout=10).shape == (16,)
    assert fake.request_count == 2
