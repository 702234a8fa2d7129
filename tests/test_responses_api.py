"""``LM(model_type="responses")``: OpenAI's Responses API wire format.

The provider's request mapping and reply parsing are checked on their own,
then end to end: Predict (ChatAdapter and JSONAdapter) through the runtime
against the fake server's ``/v1/responses``, which refuses chat-only
parameters as the real API does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from runtime_helpers import SECRET, StartRuntime, echo_answers

import dspex
from dspex.actors._lm._providers import ResponsesProvider, resolve_provider
from dspex.actors._lm._types import LMRequest
from dspex.errors import (
    AuthenticationError,
    ContextWindowError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from dspex.testing import FakeOpenAI, Fault


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET) as server:
        yield server


def responses_lm(fake: FakeOpenAI, **kwargs: Any) -> dspex.LM:
    return dspex.LM(
        "openai/gpt-test", model_type="responses", api_base=fake.url, api_key=SECRET, **kwargs
    )


def build(params: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> Any:
    provider = ResponsesProvider()
    msgs = messages or [{"role": "user", "content": "hi"}]
    request = LMRequest("openai/o4-mini", tuple(msgs), params)
    return provider.build(request, api_base="http://x/v1", api_key="k")


# -- request mapping ----------------------------------------------------------------------


def test_messages_become_instructions_and_typed_input_items() -> None:
    call = build(
        {},
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Q2"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"},
                    },
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBE",
                            "filename": "a.pdf",
                        },
                    },
                    {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
                ],
            },
        ],
    )
    assert call.url == "http://x/v1/responses" and call.method == "POST"
    assert call.json["model"] == "o4-mini" and call.json["instructions"] == "Be brief."
    assert call.json["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A1"}]},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Q2"},
                {"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "low"},
                {
                    "type": "input_file",
                    "file_data": "data:application/pdf;base64,JVBE",
                    "filename": "a.pdf",
                },
                {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
            ],
        },
    ]
    with pytest.raises(UsageError, match=r"messages\[0\]\.content\[0\] has type 'video'"):
        build({}, [{"role": "user", "content": [{"type": "video"}]}])
    assert call.headers["authorization"] == "Bearer k" and "k" not in repr(call).split("json")[0]


def test_parameters_take_their_responses_names() -> None:
    body = build({"max_tokens": 300, "reasoning_effort": "low", "temperature": 1.0}).json
    assert body["max_output_tokens"] == 300 and "max_tokens" not in body
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert "reasoning_effort" not in body and body["temperature"] == 1.0
    explicit = build({"reasoning_effort": "low", "reasoning": {"effort": "high"}}).json
    assert explicit["reasoning"] == {"effort": "high"}
    assert build({"max_completion_tokens": 9}).json["max_output_tokens"] == 9
    assert "rollout_id" not in build({"rollout_id": 3}).json  # keyed, never sent


def test_response_format_becomes_text_format() -> None:
    class Answer(pydantic.BaseModel):
        answer: str

    body = build({"response_format": Answer}).json
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] == "Answer"
    assert fmt["schema"]["properties"]["answer"]["type"] == "string"
    assert "response_format" not in body
    chat_form = {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert build({"response_format": chat_form}).json["text"]["format"] == {
        "type": "json_schema",
        "name": "out",
        "schema": {"type": "object"},
        "strict": True,
    }
    assert build({"response_format": {"type": "json_object"}}).json["text"] == {
        "format": {"type": "json_object"}
    }


# -- reply parsing ----------------------------------------------------------------------------


def test_output_items_become_text_reasoning_and_usage() -> None:
    body = {
        "status": "completed",
        "error": None,
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Hello, "},
                    {"type": "output_text", "text": "world"},
                ],
            },
        ],
        "usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
    }
    response = ResponsesProvider().parse(200, {}, json.dumps(body).encode(), model="openai/m")
    [completion] = response.completions
    assert completion.text == "Hello, world" and completion.reasoning_content == "thinking"
    assert completion.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (12, 5)
    cut = {**body, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    parsed = ResponsesProvider().parse(200, {}, json.dumps(cut).encode(), model="openai/m")
    assert parsed.completions[0].finish_reason == "length"


def test_failures_are_translated() -> None:
    provider = ResponsesProvider()
    failed = {"status": "failed", "error": {"code": "server_error", "message": "boom"}}
    with pytest.raises(ProviderError, match="boom"):
        provider.parse(200, {}, json.dumps(failed).encode(), model="openai/m")
    with pytest.raises(ProviderError, match="does not look like a openai response"):
        provider.parse(200, {}, b'{"status": "completed"}', model="openai/m")
    overflow = {
        "error": {
            "message": "Your input exceeds the context window of this model.",
            "code": "context_length_exceeded",
            "type": "invalid_request_error",
        }
    }
    with pytest.raises(ContextWindowError):
        provider.parse(400, {}, json.dumps(overflow).encode(), model="openai/m")


def test_only_openai_models_speak_it() -> None:
    with pytest.raises(UsageError, match=r"the Responses API is OpenAI's"):
        dspex.LM("anthropic/claude", model_type="responses")
    with pytest.raises(UsageError, match=r"model_type='text'"):
        dspex.LM("openai/gpt", model_type="text")
    with pytest.raises(UsageError, match=r"'responses' API is not available"):
        resolve_provider("gemini/g", api="responses")


# -- end to end ---------------------------------------------------------------------------------


def test_predict_runs_through_the_responses_api(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    echo_answers(fake, prefix="A: ")
    lm = responses_lm(fake, max_tokens=200, temperature=0.0)
    dspex.configure(lm=lm)
    prediction = dspex.Predict("question -> answer")(question="What is 2+2?")
    assert prediction.answer == "A: What is 2+2?"
    [request] = fake.requests
    assert request.path == "/v1/responses" and request.api_key_present
    assert "`question`" in request.json["instructions"]  # ChatAdapter's system prompt
    assert request.json["max_output_tokens"] == 200 and request.json["temperature"] == 0.0
    assert [item["role"] for item in request.json["input"]] == ["user"]
    assert SECRET not in json.dumps(request.json)
    # The same call again is a cache hit; a chat LM of the same model is not.
    dspex.Predict("question -> answer")(question="What is 2+2?")
    assert fake.request_count == 1
    chat = dspex.LM("openai/gpt-test", api_base=fake.url, api_key=SECRET, temperature=0.0)
    with dspex.context(lm=chat):
        dspex.Predict("question -> answer")(question="What is 2+2?")
    assert fake.requests[-1].path == "/v1/chat/completions"


def test_json_adapter_structured_output_and_n(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    fake.reply = '{"answer": "four"}'
    # A model DSPy knows takes response schemas: JSONAdapter asks for one.
    schema_lm = dspex.LM(
        "openai/gpt-4o-mini", model_type="responses", api_base=fake.url, api_key=SECRET
    )
    dspex.configure(lm=schema_lm, adapter=dspex.JSONAdapter())
    assert dspex.Predict("question -> answer")(question="2+2?").answer == "four"
    fmt = fake.requests[0].json["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["name"] and fmt["strict"] is True
    assert fmt["schema"]["properties"] == {"answer": {"type": "string"}}
    fake.reply = "many"
    lm = responses_lm(fake, cache=False)
    assert lm("hi", n=3) == ["many"] * 3  # no native n: fanned out
    assert all("n" not in r.json for r in fake.requests[1:])
    assert fake.request_count == 4


def test_errors_come_back_as_dspex_errors(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    start_runtime(lm_client={"num_retries": 0})
    lm = responses_lm(fake, cache=False)
    fake.schedule = [Fault.rate_limit(3), Fault.unauthorized(401)]
    with pytest.raises(RateLimitError) as info:
        lm("a")
    assert info.value.retry_after == 3
    with pytest.raises(AuthenticationError):
        lm("b")


def test_copy_and_state_keep_the_model_type(fake: FakeOpenAI) -> None:
    lm = responses_lm(fake)
    assert lm.dump_state()["model_type"] == "responses"
    assert lm.copy(temperature=0.5).model_type == "responses"


def test_a_saved_program_keeps_its_responses_lm(fake: FakeOpenAI, tmp_path: Any) -> None:
    program = dspex.Predict("question -> answer")
    program.lm = responses_lm(fake, max_tokens=64)
    program.save(tmp_path / "p.json")
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["lm"]["model_type"] == "responses" and SECRET not in json.dumps(saved)
    loaded = dspex.Predict("question -> answer")
    loaded.load(tmp_path / "p.json", allow_unsafe_lm_state=True)
    assert loaded.lm.model_type == "responses" and loaded.lm.kwargs["max_tokens"] == 64


def test_an_image_input_reaches_the_responses_api(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    fake.reply = "[[ ## caption ## ]]\na tiny image\n\n[[ ## completed ## ]]"
    dspex.configure(lm=responses_lm(fake))
    picture = dspex.Image("data:image/png;base64,iVBORw0KGgo=")
    caption = dspex.Predict("picture: dspex.Image -> caption")(picture=picture).caption
    assert caption == "a tiny image"
    parts = [part for item in fake.requests[0].json["input"] for part in item["content"]]
    assert {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="} in parts
