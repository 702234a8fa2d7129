"""Provider wire formats (dspex.actors._lm._providers) against the fake servers over loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from transport_helpers import TRANSPORTS, Wire

from dspex.actors._lm._providers import (
    AnthropicProvider,
    GeminiProvider,
    HTTPCall,
    OpenAIProvider,
    Provider,
    gemini_schema,
    merge_responses,
    parse_retry_after,
    resolve_provider,
    send,
    split_n,
)
from dspex.actors._lm._transport import ConnectFailed, ConnectionDropped, TransportTimeout
from dspex.actors._lm._types import LMRequest, LMResponse, Usage
from dspex.errors import (
    AuthenticationError,
    ContextWindowError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from dspex.testing._fake_providers import FakeAnthropic, FakeGemini, FakeOpenAI
from dspex.testing._fake_servers import FakeProvider, Fault

KEY = "sk-SENTINEL-provider-0a1b2c3d4e5f"
ENV_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
MESSAGES = (
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
)
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": ["integer", "null"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA}}

DIALECTS: dict[str, tuple[Callable[..., FakeProvider], Callable[[], Provider], str]] = {
    "openai": (FakeOpenAI, OpenAIProvider, "openai/gpt-4o-mini"),
    "anthropic": (FakeAnthropic, AnthropicProvider, "anthropic/claude-3-5-haiku"),
    "gemini": (FakeGemini, GeminiProvider, "gemini/gemini-2.0-flash"),
}


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_KEYS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=TRANSPORTS)
def wire(request: pytest.FixtureRequest) -> Iterator[Wire]:
    """Each test that sends runs over both transports (h11 and httpx)."""
    w = Wire(request.param)
    yield w
    w.close()


def call(
    wire: Wire,
    fake: FakeProvider,
    provider: Provider,
    model: str,
    messages: tuple[dict[str, Any], ...] = MESSAGES,
    timeout: float | None = None,
    **params: Any,
) -> LMResponse:
    request = LMRequest(model, messages, params)
    http = provider.build(request, api_base=fake.url, api_key=KEY)
    return wire.send(provider, http, model=model, timeout=timeout)


# -- request shape as received, and reply parsing ---------------------------


def test_openai_wire_format(wire: Wire) -> None:
    reply = {"texts": ["8", "6"], "finish_reason": "length", "prompt_tokens": 12}
    with FakeOpenAI(api_key=KEY, reply=lambda body: reply) as fake:
        response = call(
            wire,
            fake,
            OpenAIProvider(),
            "openai/gpt-4o-mini",
            temperature=0.3,
            max_tokens=50,
            n=2,
            stop=["\n\n"],
            response_format=JSON_SCHEMA_FORMAT,
            num_retries=3,
            top_p=None,
        )
        [seen] = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == "Bearer <redacted>"
    assert seen.headers["content-type"] == "application/json"
    assert seen.json == {
        "model": "gpt-4o-mini",
        "messages": [dict(m) for m in MESSAGES],
        "temperature": 0.3,
        "max_completion_tokens": 50,  # DSPy 3.4.1 sends max_tokens so to openai/ models
        "n": 2,
        "stop": ["\n\n"],
        "response_format": JSON_SCHEMA_FORMAT,
    }
    assert response.texts == ["8", "6"]
    assert [c.finish_reason for c in response.completions] == ["length", "length"]
    assert response.usage == Usage(12, 2)
    assert response.model == "openai/gpt-4o-mini"


def test_anthropic_wire_format(wire: Wire) -> None:
    with FakeAnthropic(api_key=KEY, reply=lambda body: {"text": "6 it is"}) as fake:
        response = call(
            wire,
            fake,
            AnthropicProvider(),
            "anthropic/claude-3-5-haiku",
            temperature=0.0,
            stop="END",
            n=1,
            response_format={"type": "json_object"},
        )
        [seen] = fake.requests
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == "<redacted>"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.json == {
        "model": "claude-3-5-haiku",
        "max_tokens": 4096,
        "system": "You are terse.",
        "messages": [dict(m) for m in MESSAGES[1:]],
        "temperature": 0.0,
        "stop_sequences": ["END"],
    }
    assert response.texts == ["6 it is"]
    assert response.completions[0].finish_reason == "stop"
    assert response.usage == Usage(prompt_tokens=9, completion_tokens=3)  # word counts


def test_gemini_wire_format(wire: Wire) -> None:
    reply = {"texts": ["a", "b"], "finish_reason": "length", "completion_tokens": 4}
    with FakeGemini(api_key=KEY, reply=lambda body: reply) as fake:
        response = call(
            wire,
            fake,
            GeminiProvider(),
            "gemini/gemini-2.0-flash",
            temperature=0.5,
            max_tokens=64,
            n=2,
            stop=["STOP"],
            response_format=JSON_SCHEMA_FORMAT,
        )
        [seen] = fake.requests
    assert seen.path == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert seen.query == {}  # the key is never in the URL
    assert seen.headers["x-goog-api-key"] == "<redacted>"
    assert seen.json == {
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "What is 2+2?"}]},
            {"role": "model", "parts": [{"text": "4"}]},
            {"role": "user", "parts": [{"text": "And 3+3?"}]},
        ],
        "generationConfig": {
            "temperature": 0.5,
            "maxOutputTokens": 64,
            "candidateCount": 2,
            "stopSequences": ["STOP"],
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "OBJECT",
                "properties": {
                    "answer": {"type": "STRING"},
                    "score": {"type": "INTEGER", "nullable": True},
                },
                "propertyOrdering": ["answer", "score"],
                "required": ["answer"],
            },
        },
    }
    assert response.texts == ["a", "b"]
    assert [c.finish_reason for c in response.completions] == ["length", "length"]
    assert response.usage == Usage(prompt_tokens=9, completion_tokens=4)


def test_anthropic_n_is_fanned_out_by_the_client(wire: Wire) -> None:
    provider = AnthropicProvider()
    model = "anthropic/claude-3-5-haiku"
    request = LMRequest(model, MESSAGES, {"n": 3, "temperature": 1.0})
    assert provider.native_n is False and OpenAIProvider.native_n is True
    with pytest.raises(UsageError, match="n=3"):
        provider.build(request, api_base="http://127.0.0.1:9", api_key=KEY)
    counter = iter(range(100))
    with FakeAnthropic(reply=lambda body: f"take {next(counter)}") as fake:
        parts = [
            wire.send(provider, provider.build(r, api_base=fake.url, api_key=KEY), model=model)
            for r in split_n(request)
        ]
        merged = merge_responses(parts, model=model)
        assert fake.request_count == 3
        assert all("n" not in r.json for r in fake.requests)
    assert merged.texts == ["take 0", "take 1", "take 2"]
    assert merged.usage == Usage(3 * 9, 3 * 2)


def test_llama_cpp_json_schema_style(wire: Wire) -> None:
    model = "openai/local"
    with FakeOpenAI(reject_json_schema=True) as fake:
        with pytest.raises(ProviderError) as info:
            call(wire, fake, OpenAIProvider(), model, response_format=JSON_SCHEMA_FORMAT)
        assert info.value.status == 500
        response = call(
            wire,
            fake,
            OpenAIProvider(json_schema_style="llama_cpp"),
            model,
            response_format=JSON_SCHEMA_FORMAT,
        )
        assert response.texts == ["ok"]
        assert fake.requests[-1].json["response_format"] == {
            "type": "json_object",
            "schema": SCHEMA,
        }


def test_pydantic_model_as_response_format(wire: Wire) -> None:
    import pydantic

    class Answer(pydantic.BaseModel):
        answer: str

    with FakeOpenAI() as openai, FakeGemini() as gemini:
        call(wire, openai, OpenAIProvider(), "openai/m", response_format=Answer)
        call(wire, gemini, GeminiProvider(), "gemini/m", response_format=Answer)
        fmt = openai.requests[0].json["response_format"]
        config = gemini.requests[0].json["generationConfig"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Answer"
    assert config["responseSchema"]["properties"] == {"answer": {"type": "STRING"}}


def test_openai_error_inside_a_200_reply(wire: Wire) -> None:
    bad = {"body": {"error": {"message": "model not loaded", "code": 503}}}
    with FakeOpenAI(reply=lambda body: bad) as fake, pytest.raises(ProviderError) as info:
        call(wire, fake, OpenAIProvider(), "openai/m")
    assert info.value.status == 503 and "model not loaded" in str(info.value)


def test_gemini_blocked_prompt_is_not_retryable(wire: Wire) -> None:
    blocked = {"body": {"promptFeedback": {"blockReason": "SAFETY"}}}
    with FakeGemini(reply=lambda body: blocked) as fake, pytest.raises(LMError) as info:
        call(wire, fake, GeminiProvider(), "gemini/g")
    assert info.value.retryable is False and "SAFETY" in str(info.value)


def test_concurrent_sends_share_one_transport(wire: Wire) -> None:
    provider = OpenAIProvider()

    async def run(url: str) -> list[LMResponse]:
        calls = [
            provider.build(LMRequest("openai/m", MESSAGES), api_base=url, api_key=KEY)
            for _ in range(20)
        ]
        return await asyncio.gather(
            *(send(wire.transport, provider, c, model="openai/m") for c in calls)
        )

    with FakeOpenAI(latency=0.05) as fake:
        responses = wire.io.run(run(fake.url), 30)
        assert fake.max_in_flight > 1
    assert [r.texts for r in responses] == [["ok"]] * 20


# -- failures translated into dspex.errors ------------------------------------


FAULTS: list[tuple[Fault, type[LMError], int | None]] = [
    (Fault.error(500), ProviderError, 500),
    (Fault.error(503), ProviderError, 503),
    (Fault.error(408), ProviderError, 408),
    (Fault.rate_limit(7), RateLimitError, 429),
    (Fault.unauthorized(), AuthenticationError, 401),
    (Fault.unauthorized(403), AuthenticationError, 403),
    (Fault.error(400, "bad field 'x'"), LMError, 400),
    (Fault.malformed(), ProviderError, 200),
    (Fault.drop(), ProviderError, None),
    (Fault.timeout(), LMTimeoutError, None),
]


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("fault", "error", "status"), FAULTS, ids=lambda v: str(v)[:30])
def test_faults_become_dspex_errors(
    wire: Wire,
    dialect: str,
    fault: Fault,
    error: type[LMError],
    status: int | None,
) -> None:
    make_fake, make_provider, model = DIALECTS[dialect]
    with make_fake(schedule=[fault]) as fake, pytest.raises(LMError) as info:
        call(wire, fake, make_provider(), model, timeout=0.3)
    err = info.value
    assert type(err) is error
    assert err.status == status and err.model == model
    assert model in str(err) and KEY not in str(err)
    if status is None or status == 200:  # translated from an exception: chained to it
        assert err.__cause__ is not None
    assert err.retryable is (error in (ProviderError, RateLimitError, LMTimeoutError))
    if error is RateLimitError:
        assert isinstance(err, RateLimitError) and err.retry_after == 7.0
    if status == 400:
        assert "bad field 'x'" in str(err)
    if error is LMTimeoutError:
        assert isinstance(err.__cause__, TransportTimeout)
    if fault.kind == "drop":
        assert isinstance(err.__cause__, ConnectionDropped)


def test_http_date_retry_after_over_the_wire(wire: Wire) -> None:
    date = "Wed, 21 Oct 2099 07:28:00 GMT"
    with (
        FakeOpenAI(schedule=[Fault.rate_limit(date)]) as fake,
        pytest.raises(RateLimitError) as info,
    ):
        call(wire, fake, OpenAIProvider(), "openai/m")
    assert info.value.retry_after is not None and info.value.retry_after > 3600


def test_connection_refused_is_a_provider_error(wire: Wire) -> None:
    with FakeOpenAI() as fake:
        url = fake.url
    with pytest.raises(ProviderError) as info:
        call(wire, fake, OpenAIProvider(), "openai/m")
    assert isinstance(info.value.__cause__, ConnectFailed)
    assert info.value.retryable and url.split("/v1")[0] != ""


@pytest.mark.parametrize("dialect", DIALECTS)
def test_wrong_key_is_an_authentication_error_without_the_key(wire: Wire, dialect: str) -> None:
    make_fake, make_provider, model = DIALECTS[dialect]
    with make_fake(api_key="sk-the-right-one-123456789") as fake:
        with pytest.raises(AuthenticationError) as info:
            call(wire, fake, make_provider(), model)
        assert fake.outcomes == {"auth": 1} or fake.outcomes == {"bad_request": 1}
    assert KEY not in str(info.value) and KEY not in repr(fake.requests)
    assert info.value.retryable is False
    assert make_provider().env_keys[0] in str(info.value)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_missing_key_for_the_public_endpoint_fails_before_sending(dialect: str) -> None:
    _, make_provider, model = DIALECTS[dialect]
    provider = make_provider()
    with pytest.raises(AuthenticationError, match=provider.env_keys[0]):
        provider.build(LMRequest(model, MESSAGES), api_base=None, api_key=None)


def test_keys_come_from_the_environment(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = OpenAIProvider()
    request = LMRequest("openai/gpt-4o-mini", MESSAGES)
    with FakeOpenAI(api_key=KEY) as fake:
        http = provider.build(request, api_base=fake.url, api_key=None)
        assert wire.send(provider, http, model=request.model).texts == ["ok"]
    public = provider.build(request, api_base=None, api_key=None)
    assert public.url == "https://api.openai.com/v1/chat/completions"
    assert KEY not in repr(public) and "<redacted>" in repr(public)

    gemini = GeminiProvider()
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    assert gemini.resolve_api_key(None) == "google-key"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key")
    assert gemini.resolve_api_key(None) == "gemini-key"
    assert gemini.resolve_api_key("explicit") == "explicit"


def test_default_endpoints() -> None:
    request = LMRequest("x", MESSAGES)
    urls = [
        p.build(request, api_base=None, api_key=KEY).url
        for p in (OpenAIProvider(), AnthropicProvider(), GeminiProvider())
    ]
    assert urls == [
        "https://api.openai.com/v1/chat/completions",
        "https://api.anthropic.com/v1/messages",
        "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent",
    ]


# -- pure helpers --------------------------------------------------------------


def test_parse_retry_after_forms() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after": "Tue, 01 Jan 2030 12:00:30 GMT"}, now=now) == 30.0
    assert parse_retry_after({"retry-after": "Tue, 01 Jan 2030 11:00:00 GMT"}, now=now) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_gemini_retry_delay_in_the_body() -> None:
    body = b'{"error": {"code": 429, "details": [{"retryDelay": "12s"}], "message": "quota"}}'
    err = GeminiProvider().error_for_status(429, {}, body, model="gemini/g")
    assert isinstance(err, RateLimitError) and err.retry_after == 12.0


def test_error_messages_scrub_keys() -> None:
    body = f'{{"error": {{"message": "bad key {KEY} and AIzaSyA1234567890abcdefghijkl"}}}}'
    err = OpenAIProvider().error_for_status(400, {}, body.encode(), model="openai/m", api_key=KEY)
    assert KEY not in str(err) and "AIzaSy" not in str(err) and "<redacted>" in str(err)
    html = OpenAIProvider().error_for_status(502, {}, b"<html>Bad gateway</html>", model="m")
    assert isinstance(html, ProviderError) and "Bad gateway" in str(html)


def test_resolve_provider() -> None:
    provider, name = resolve_provider("openai/gpt-4o-mini")
    assert isinstance(provider, OpenAIProvider) and name == "gpt-4o-mini"
    provider, name = resolve_provider("openai/meta-llama/Llama-3-8b", json_schema_style="llama_cpp")
    assert name == "meta-llama/Llama-3-8b"
    assert isinstance(provider, OpenAIProvider) and provider.json_schema_style == "llama_cpp"
    assert isinstance(resolve_provider("anthropic/claude")[0], AnthropicProvider)
    assert resolve_provider("gemini/models/gemini-pro")[1] == "gemini-pro"
    with pytest.raises(UsageError, match=r"'mistral/large'.*'anthropic/', 'gemini/', 'openai/'"):
        resolve_provider("mistral/large")
    with pytest.raises(UsageError, match="gpt-4o"):
        resolve_provider("gpt-4o")
    with pytest.raises(UsageError, match="names no model"):
        resolve_provider("openai/")
    with pytest.raises(UsageError, match="json_schema_style"):
        resolve_provider("anthropic/claude", json_schema_style="llama_cpp")
    with pytest.raises(UsageError, match="'xml'"):
        OpenAIProvider(json_schema_style="xml")  # type: ignore[arg-type]


def test_bad_messages_are_usage_errors() -> None:
    openai, anthropic, gemini = OpenAIProvider(), AnthropicProvider(), GeminiProvider()
    with pytest.raises(UsageError, match="empty"):
        openai.build(LMRequest("m", ()), api_base="http://h", api_key=None)
    with pytest.raises(UsageError, match=r"messages\[0\]"):
        openai.build(LMRequest("m", ("hi",)), api_base="http://h", api_key=None)  # type: ignore[arg-type]
    tool = ({"role": "tool", "content": "x"},)
    with pytest.raises(UsageError, match="'tool'"):
        anthropic.build(LMRequest("m", tool), api_base="http://h", api_key=KEY)
    only_system = ({"role": "system", "content": "x"},)
    with pytest.raises(UsageError, match="user message"):
        gemini.build(LMRequest("m", only_system), api_base="http://h", api_key=KEY)
    audio = ({"role": "user", "content": [{"type": "input_audio"}]},)
    with pytest.raises(UsageError, match="input_audio"):
        gemini.build(LMRequest("m", audio), api_base="http://h", api_key=KEY)
    remote = (
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]},
    )
    with pytest.raises(UsageError, match="data:"):
        gemini.build(LMRequest("m", remote), api_base="http://h", api_key=KEY)
    with pytest.raises(UsageError, match="response_format"):
        openai.build(
            LMRequest("m", MESSAGES, {"response_format": "json"}), api_base="http://h", api_key=None
        )


def test_image_parts_are_translated() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = ({"role": "user", "content": [{"type": "text", "text": "see"}, image]},)
    request = LMRequest("m", messages)
    anthropic = AnthropicProvider().build(request, api_base="http://h", api_key=KEY).json
    gemini = GeminiProvider().build(request, api_base="http://h", api_key=KEY).json
    assert anthropic["messages"][0]["content"] == [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
    ]
    assert gemini["contents"][0]["parts"] == [
        {"text": "see"},
        {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
    ]


def test_gemini_schema_conversion() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"k": {"enum": ["a", "b"]}}}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "description": "d"},
            "maybe": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
    }
    assert gemini_schema(schema) == {
        "type": "OBJECT",
        "properties": {
            "items": {
                "type": "ARRAY",
                "description": "d",
                "items": {
                    "type": "OBJECT",
                    "properties": {"k": {"type": "STRING", "enum": ["a", "b"]}},
                    "propertyOrdering": ["k"],
                },
            },
            "maybe": {"type": "NUMBER", "nullable": True},
        },
        "propertyOrdering": ["items", "maybe"],
    }
    recursive = {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}}
    assert gemini_schema({"$ref": "#/$defs/N", **recursive}) is None
    assert gemini_schema({"type": "object", "additionalProperties": True}) is None
    # A schema Gemini cannot express still asks for JSON.
    fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    request = LMRequest("m", MESSAGES, {"response_format": fmt})
    config = GeminiProvider().build(request, api_base="http://h", api_key=KEY).json
    assert config["generationConfig"] == {"responseMimeType": "application/json"}


def test_anthropic_usage_counts_cache_tokens() -> None:
    body = (
        b'{"content": [{"type": "text", "text": "a"}, {"type": "tool_use"}, '
        b'{"type": "text", "text": "b"}], "stop_reason": "max_tokens", "usage": '
        b'{"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 2}}'
    )
    response = AnthropicProvider().parse(200, {}, body, model="anthropic/c")
    assert response.texts == ["ab"] and response.completions[0].finish_reason == "length"
    assert response.usage == Usage(7, 2)


def test_unexpected_reply_shape_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="does not look like") as info:
        OpenAIProvider().parse(200, {}, b'{"result": 1}', model="openai/m")
    assert isinstance(info.value.__cause__, KeyError)


def test_http_call_repr_hides_the_key() -> None:
    http = HTTPCall("POST", "http://h", {"x-api-key": KEY}, {}, frozenset({"x-api-key"}))
    assert KEY not in repr(http) and "x-api-key" in repr(http)


def test_openai_models_take_max_completion_tokens_like_dspy() -> None:
    # DSPy 3.4.1 sends max_completion_tokens to every openai/ model (reasoning or not, a
    # compatible server too); llama.cpp's server (local/ models) keeps max_tokens.
    for provider, model, key in [
        (OpenAIProvider(), "openai/o3-mini", "max_completion_tokens"),
        (OpenAIProvider(), "openai/gpt-4o", "max_completion_tokens"),
        (OpenAIProvider(), "openai/my-vllm-model", "max_completion_tokens"),
        (OpenAIProvider(json_schema_style="llama_cpp"), "openai/smollm2", "max_tokens"),
    ]:
        request = LMRequest(model, MESSAGES, {"max_tokens": 99})
        body = provider.build(request, api_base="http://h", api_key=None).json
        assert body[key] == 99 and len([k for k in body if k.startswith("max_")]) == 1


# -- a prompt longer than the context window ----------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_context_window_fault_is_a_context_window_error(wire: Wire, dialect: str) -> None:
    make_fake, make_provider, model = DIALECTS[dialect]
    with make_fake(schedule=[Fault.context_window(limit=3)]) as fake:
        with pytest.raises(ContextWindowError) as info:
            call(wire, fake, make_provider(), model)
        sent = fake.prompt_tokens(fake.requests[0].json)
    err = info.value
    assert err.status == 400 and err.model == model and err.retryable is False
    assert err.prompt_tokens == sent and err.context_window == 3
    assert "context window" in str(err) and "larger context window" in str(err)
    assert KEY not in str(err) and isinstance(err, LMError)
    assert not isinstance(err, ProviderError)  # so the circuit breaker ignores it


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_prompt_over_the_fakes_window_is_refused_and_a_short_one_served(
    wire: Wire, dialect: str
) -> None:
    make_fake, make_provider, model = DIALECTS[dialect]
    with make_fake(context_window=6) as fake:
        with pytest.raises(ContextWindowError) as info:
            call(wire, fake, make_provider(), model)  # MESSAGES: 9 words
        short = ({"role": "user", "content": "Hi"},)
        assert call(wire, fake, make_provider(), model, short).texts == ["ok"]
        assert fake.outcomes == {"context_window": 1, "ok": 1}
    assert (info.value.prompt_tokens, info.value.context_window) == (9, 6)


@pytest.mark.parametrize("status", [400, 500])
def test_llama_cpp_server_context_error(wire: Wire, status: int) -> None:
    # llama.cpp answers 400 since October 2025, 500 in the builds before
    schedule = [Fault.context_window(limit=4, status=status)]
    with FakeOpenAI(context_error="llama_cpp", schedule=schedule) as fake:
        with pytest.raises(ContextWindowError) as info:
            call(wire, fake, OpenAIProvider(json_schema_style="llama_cpp"), "openai/local")
    assert info.value.status == status and info.value.context_window == 4
    assert "exceeds the available context size" in str(info.value)


# Error bodies as the providers send them (from their issue trackers).
CONTEXT_BODIES: list[tuple[Provider, int, dict[str, Any], tuple[int | None, int | None]]] = [
    (
        OpenAIProvider(),
        400,
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens. However, your "
                "messages resulted in 9000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
        (9000, 8192),
    ),
    (  # vLLM's older top-level error shape
        OpenAIProvider(),
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you "
            "requested 5000 tokens (4000 in the messages, 1000 in the completion).",
            "type": "BadRequestError",
            "code": 400,
        },
        (5000, 4096),
    ),
    (  # llama-cpp-python's server when it cannot rephrase the error
        OpenAIProvider(),
        500,
        {
            "error": {
                "message": "Requested tokens (2285) exceed context window of 2048",
                "type": "internal_server_error",
                "param": None,
                "code": None,
            }
        },
        (2285, 2048),
    ),
    (
        OpenAIProvider(),
        500,
        {
            "error": {
                "code": 500,
                "message": "the request exceeds the available context size. try increasing "
                "the context size or enable context shift",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 1407,
                "n_ctx": 256,
            }
        },
        (1407, 256),
    ),
    (
        AnthropicProvider(),
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 208656 tokens > 200000 maximum",
            },
        },
        (208656, 200000),
    ),
    (
        AnthropicProvider(),
        400,
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "input length and `max_tokens` exceed context limit: 178959 + "
                "64000 > 200000, decrease input length or `max_tokens` and try again",
            },
        },
        (178959, 200000),
    ),
    (
        GeminiProvider(),
        400,
        {
            "error": {
                "code": 400,
                "message": "The input token count (3475108) exceeds the maximum number of "
                "tokens allowed (1048576).",
                "status": "INVALID_ARGUMENT",
            }
        },
        (3475108, 1048576),
    ),
    (  # Vertex AI's wording
        GeminiProvider(),
        400,
        {
            "error": {
                "code": 400,
                "message": "Unable to submit request because the input token count is 1200000 "
                "but model only supports up to 1048576. Reduce the input token count.",
                "status": "INVALID_ARGUMENT",
            }
        },
        (1200000, 1048576),
    ),
]


@pytest.mark.parametrize(
    ("provider", "status", "body", "counts"), CONTEXT_BODIES, ids=lambda v: str(v)[:24]
)
def test_real_context_window_bodies(
    provider: Provider, status: int, body: dict[str, Any], counts: tuple[int | None, int | None]
) -> None:
    raw = json.dumps(body).encode()
    err = provider.error_for_status(status, {}, raw, model="p/m", api_key=KEY)
    assert isinstance(err, ContextWindowError) and err.status == status
    assert (err.prompt_tokens, err.context_window) == counts
    assert err.retryable is False


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        (OpenAIProvider(), {"error": {"message": "messages: too many", "code": "invalid_value"}}),
        (AnthropicProvider(), {"type": "error", "error": {"message": "max_tokens: too large"}}),
        (GeminiProvider(), {"error": {"code": 400, "message": "Invalid value at 'contents'"}}),
    ],
)
def test_other_400s_stay_plain_lm_errors(provider: Provider, body: dict[str, Any]) -> None:
    err = provider.error_for_status(400, {}, json.dumps(body).encode(), model="p/m")
    assert type(err) is LMError and err.status == 400 and err.retryable is False
