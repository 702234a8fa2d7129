"""The response cache key: one table of request parameters, and keys pinned byte for byte.

Disk caches outlive dspex versions, so a key computed for a given request must
never change: the pinned hex digests below were computed before the key code
moved into ``dspex.actors._lm._cache_key`` and must keep matching.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dspex.actors._lm._cache_key import (
    PARAMS,
    ParamUse,
    param_use,
    request_key,
    request_params,
    wire_params,
)
from dspex.actors._lm._resilience import LMClientConfig
from dspex.actors._lm._types import LMRequest

KEY = "sk-CACHEKEY-4e1f0a9b7c3d2e6f"


MESSAGES: tuple[dict[str, Any], ...] = (
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in the picture? é"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    },
)

PARAMS_SENT = {
    "temperature": 0.25,
    "max_tokens": 128,
    "n": 2,
    "stop": ["\n\n", "END"],
    "response_format": {"type": "json_object"},
    "extra_body": {"tags": {"b", "a"}, "api_key": KEY, "top_k": None},
}


def _request(**extra: Any) -> LMRequest:
    return LMRequest("openai/gpt-4o-mini", MESSAGES, {**PARAMS_SENT, **extra})


# Computed with the key code as it was before it moved (three lists in _handle.py,
# _providers/_base.py and _model.py; commit 4a64a3f). They must never change.
PINNED = {
    "plain": "9f16d40e02a35fc9214faed3ce46f6d4db918fd394888a8aa7f6ff8db3199d16",
    "rollout": "d4c1b698d9c08bbde759840509bf964089c03556391686fdc48e1ac5307e6c9d",
    "no_scope": "de63ab200e5bc8492234d1816598050f6c89e105394c95e2bfaa2b60c07bb6d6",
    "styled": "9a5d14f12b0ae8672389341b343d711771951ff0f3c763db186081b5fb11269a",
}
SCOPE = "http://127.0.0.1:8000/v1"
CALL_OPTIONS = {
    "timeout": 5,
    "num_retries": 2,
    "cache": False,
    "api_key": KEY,
    "rpm": 3,
    "tpm": 4,
    "api_base": "http://elsewhere",
    "base_url": "http://elsewhere",
}


def test_keys_of_existing_requests_are_unchanged() -> None:
    assert request_key(_request(), SCOPE) == PINNED["plain"]
    assert request_key(_request(rollout_id=3), SCOPE) == PINNED["rollout"]
    assert request_key(_request()) == PINNED["no_scope"]
    assert request_key(_request(json_schema_style="llama_cpp"), SCOPE) == PINNED["styled"]
    # Call options and the key never change it, whether or not they were filtered out.
    assert request_key(_request(**CALL_OPTIONS), SCOPE) == PINNED["plain"]
    params = request_params({**PARAMS_SENT, **CALL_OPTIONS})
    assert request_key(LMRequest("openai/gpt-4o-mini", MESSAGES, params), SCOPE) == PINNED["plain"]


# Plain chat messages (what every adapter sends) take a fast path through the
# scrubbing; these keys were computed by the code before that path existed.
PLAIN_CASES = [
    (
        ({"role": "system", "content": "Be brief. é"}, {"role": "user", "content": "Q?"}),
        "6c330c5868664920629d27bd658f23b4fb5649a66da49aa42ee8fdff2f2bcaed",
    ),
    # A None value and a secret-named key are dropped, as before: the same key.
    (
        ({"role": "user", "content": "x", "name": None},),
        "af86ad32bc364b3200f3ad8f0fa76a471a3724a4ab437ece7839199abca9119c",
    ),
    (
        ({"role": "user", "content": "x", "api_key": KEY},),
        "af86ad32bc364b3200f3ad8f0fa76a471a3724a4ab437ece7839199abca9119c",
    ),
    (
        ({"role": "user", "content": "x", 1: "y"},),
        "1e9038834a096ba7b637753c764d6ef0c818c018c9ff11dfd9bba6ea7e3192b0",
    ),
    (
        (
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
            {"role": "tool", "content": "r", "tool_call_id": "1"},
        ),
        "f6e854d3df158cf99ba1cc03832c3392b6951b7839047d644ecd27c70dcddf4a",
    ),
]


@pytest.mark.parametrize(("messages", "pinned"), PLAIN_CASES)
def test_keys_of_plain_chat_messages_are_unchanged(
    messages: tuple[dict[Any, Any], ...], pinned: str
) -> None:
    request = LMRequest("openai/m", messages, {"temperature": 0.0, "max_tokens": 10})
    assert request_key(request, "http://x") == pinned


def test_a_handle_builds_the_pinned_key_from_a_call() -> None:
    from dspex.actors._lm._handle import LMHandle
    from dspex.actors._lm._slot import ClientSlot

    handle = LMHandle(ClientSlot("openai/gpt-4o-mini", SCOPE), kwargs={"temperature": 0.25})
    call_params = {k: v for k, v in PARAMS_SENT.items() if k != "temperature"}
    request, options, use_cache = handle.build(MESSAGES, {**call_params, **CALL_OPTIONS})
    assert handle.request_key(request) == PINNED["plain"]
    assert (options.timeout, options.num_retries, use_cache) == (5, 2, False)
    assert "api_key" not in request.params and "timeout" not in request.params


def test_every_parameter_has_one_category() -> None:
    assert param_use("top_p") is ParamUse.SENT  # unlisted names pass through
    assert {name for name, use in PARAMS.items() if use is ParamUse.KEYED} == {
        "rollout_id",
        "json_schema_style",
        "finetuning_model",
        "launch_kwargs",
        "train_kwargs",
        "model_type",  # the API (responses, embeddings): keyed, the client speaks it
    }
    # Every client setting an LM takes is a call option: never sent, never keyed.
    for field in dataclasses.fields(LMClientConfig):
        assert PARAMS[field.name] is ParamUse.NEITHER, field.name
    for name in ("api_key", "api_base", "base_url", "cache"):
        assert PARAMS[name] is ParamUse.NEITHER, name


def test_what_is_sent_and_what_is_keyed() -> None:
    params = {**PARAMS_SENT, **CALL_OPTIONS, "rollout_id": 1, "seed": 7, "top_k": None}
    carried = request_params(params)
    assert set(carried) == {*PARAMS_SENT, "rollout_id", "seed", "top_k"}
    assert set(wire_params(carried)) == {*PARAMS_SENT, "seed"}  # no None, nothing keyed only


@pytest.mark.parametrize(
    "secret",
    [
        {"api_key": KEY},
        {"extra_headers": {"Authorization": f"Bearer {KEY}"}},
        {"extra_headers": {"Ocp-Apim-Subscription-Key": KEY}},
        {"extra_headers": {"Cookie": f"session={KEY}"}},
    ],
)
def test_no_api_key_reaches_a_key(secret: dict[str, Any]) -> None:
    with_secret = _request(**secret)
    without = _request(**{k: {} for k, v in secret.items() if isinstance(v, dict)})
    assert request_key(with_secret, SCOPE) == request_key(without, SCOPE)


def test_an_lm_loaded_from_a_dspy_file_sends_no_dspy_state_fields(
    start_runtime: Any, tmp_path: Any
) -> None:
    from pathlib import Path

    from runtime_helpers import SECRET

    import dspex
    from dspex.testing import FakeOpenAI

    start_runtime()
    qa = dspex.Predict("sentence -> sentiment")
    qa.load(Path(__file__).parent / "data" / "dspy3_predict_with_lm.json")
    assert qa.lm is not None and qa.lm.kwargs["launch_kwargs"] == {}  # DSPy's state fields
    reply = "[[ ## sentiment ## ]]\npositive\n\n[[ ## completed ## ]]"
    with FakeOpenAI(api_key=SECRET, reply=reply) as fake:
        qa.lm = qa.lm.copy(api_base=fake.url, api_key=SECRET)
        assert qa(sentence="great").sentiment == "positive"
        [sent] = fake.requests
    assert sent.json["max_completion_tokens"] == 4000 and sent.json["temperature"] == 0.0
    for name in ("launch_kwargs", "train_kwargs", "finetuning_model", "num_retries", "cache"):
        assert name not in sent.json, name


def _reference_key(request: LMRequest, api_base: str | None) -> str:
    """The key as first written: json.dumps of the scrubbed payload (must stay equal)."""
    import hashlib
    import json

    from dspex.actors._lm._cache_key import _jsonable, _scrubbed

    payload = {
        "model": request.model,
        "api_base": api_base,
        "messages": [_scrubbed(m) for m in request.messages],
        "params": _scrubbed(request_params(request.params)),
    }
    text = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable
    )
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_piecewise_key_equals_the_reference_for_many_requests() -> None:
    import random

    rng = random.Random(7)
    texts = ["", "plain", 'quote " and \\ backslash', "é ü 日本 \u2028", "a\nb\tc", "{}[]"]
    values: list[Any] = [None, 0, 1, True, False, 0.0, -0.0, 1.5, float("inf"), "x", [1, "a"]]

    def message() -> Any:
        kind = rng.randrange(6)
        if kind == 0:
            return {"role": rng.choice(["user", "system"]), "content": rng.choice(texts)}
        if kind == 1:
            return {"content": rng.choice(texts), "role": "assistant"}  # other key order
        if kind == 2:
            return {"role": "user", "content": [{"type": "text", "text": rng.choice(texts)}]}
        if kind == 3:
            return {"role": "user", "content": rng.choice(values), "name": rng.choice(values)}
        if kind == 4:
            return {"role": "user", "content": "x", "api_key": KEY}
        return {"role": rng.choice(texts), "content": rng.choice(texts), "tool_call_id": "1"}

    for _ in range(300):
        msgs = tuple(message() for _ in range(rng.randrange(0, 5)))
        params = {rng.choice(["temperature", "n", "stop", "seed"]): rng.choice(values)}
        model = rng.choice(["openai/m", "é/m"])
        scope = rng.choice([None, SCOPE, 'http://"odd"'])
        request = LMRequest(model, msgs, params)
        # Twice: the second time the earlier messages' JSON comes from the memo.
        assert request_key(request, scope) == _reference_key(request, scope)
        assert request_key(request, scope) == _reference_key(request, scope)


def test_the_message_memo_stays_bounded() -> None:
    from dspex.actors._lm import _cache_key

    big = "x" * 300_000
    for i in range(40):  # 40 distinct large system messages: 24 M characters of JSON + content
        request = LMRequest("m", ({"role": "system", "content": f"{i}{big}"}, MESSAGES[0]), {})
        request_key(request, None)
    kept = sum(len(v) + len(k[1]) for k, v in _cache_key._MESSAGE_JSON.items())
    assert kept <= _cache_key._MESSAGE_JSON_CHARS
    assert len(_cache_key._MESSAGE_JSON) <= _cache_key._MESSAGE_JSON_KEPT
