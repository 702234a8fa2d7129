"""The fake provider HTTP servers of dspex.testing, exercised over real loopback HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from wait_helpers import wait_until

from dspex.errors import UsageError
from dspex.testing._fake_providers import FakeAnthropic, FakeGemini, FakeOpenAI
from dspex.testing._fake_servers import FakeProvider, Fault, FaultKind, Reply

KEY = "sk-SENTINEL-fake-9d8c7b6a5f4e"
CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello there"}]}
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as f:
        yield f


def post(client: httpx.Client, fake: FakeProvider, body: Any = CHAT, **kw: Any) -> httpx.Response:
    headers = kw.pop("headers", AUTH)
    return client.post(f"{fake.url}/chat/completions", json=body, headers=headers, **kw)


# -- lifecycle --------------------------------------------------------------


def test_context_manager_serves_and_stop_leaves_no_thread(client: httpx.Client) -> None:
    with FakeOpenAI() as fake:
        assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/v1")
        assert post(client, fake).status_code == 200
        port = fake.url.split(":")[2].split("/")[0]
        assert any(t.name == "dspex-openai" for t in threading.enumerate())
    assert not any(t.name == "dspex-openai" for t in threading.enumerate())
    with pytest.raises(httpx.ConnectError):
        client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=CHAT)


def test_explicit_start_stop_and_urls_per_dialect() -> None:
    fakes = [FakeOpenAI(), FakeAnthropic(), FakeGemini()]
    try:
        for fake in fakes:
            assert fake.start() is fake
        assert [f.url.rsplit("/", 1)[1] for f in fakes] == ["v1", "v1", "v1beta"]
        assert "requests=0" in repr(fakes[0])
    finally:
        for fake in fakes:
            fake.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("dspex-")]
    fakes[0].stop()  # a second stop is a no-op


def test_stop_releases_a_hanging_request() -> None:
    reached = threading.Event()

    def schedule(index: int) -> Fault:
        reached.set()
        return Fault.timeout()

    outcome: list[BaseException] = []

    def call(url: str) -> None:
        with httpx.Client(timeout=30) as c:
            try:
                c.post(f"{url}/chat/completions", json=CHAT, headers=AUTH)
            except httpx.HTTPError as exc:
                outcome.append(exc)

    fake = FakeOpenAI(schedule=schedule).start()
    caller = threading.Thread(target=call, args=(fake.url,))
    try:
        caller.start()
        assert reached.wait(5)
    finally:
        fake.stop()
    caller.join(5)
    assert not caller.is_alive()
    assert outcome and isinstance(outcome[0], httpx.TransportError)


def test_keep_alive_reuses_one_connection(fake: FakeOpenAI, client: httpx.Client) -> None:
    for _ in range(20):
        assert post(client, fake).status_code == 200
    assert fake.request_count == 20
    assert fake.connections == 1


async def _burst(url: str, n: int) -> list[int | BaseException]:
    """POST ``n`` chat requests at once; each request's status, or what it raised."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:
        replies = await asyncio.gather(
            *(c.post(f"{url}/chat/completions", json=CHAT, headers=AUTH) for _ in range(n)),
            return_exceptions=True,
        )
    return [r.status_code if isinstance(r, httpx.Response) else r for r in replies]


def test_300_concurrent_requests_are_held_at_once_then_all_answered() -> None:
    # Held by a latency no test waits out: a serial server never gets past one.
    # (Its wall time under load is a figure in bench/fake_servers.py.)
    outcome: list[list[int | BaseException]] = []
    with FakeOpenAI(latency=120.0) as held:
        caller = threading.Thread(target=lambda: outcome.append(asyncio.run(_burst(held.url, 300))))
        caller.start()
        try:
            wait_until(lambda: held.in_flight == 300, what="300 requests in the server at once")
        finally:
            held.stop()  # drops the held requests
            caller.join(30)
    assert not caller.is_alive()
    assert held.max_in_flight == 300
    assert all(isinstance(r, httpx.TransportError) for r in outcome[0])

    with FakeOpenAI() as fake:  # and without the hold, every one is answered
        statuses = asyncio.run(_burst(fake.url, 300))
    assert statuses == [200] * 300
    assert fake.request_count == 300


# -- scripting --------------------------------------------------------------


def test_fixed_reply_and_n_choices(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.reply = "forty two"
    data = post(client, fake, {**CHAT, "n": 3}).json()
    assert [c["message"]["content"] for c in data["choices"]] == ["forty two"] * 3
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert data["object"] == "chat.completion" and data["model"] == "gpt-test"
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}


def test_reply_function_sees_the_request_and_controls_usage(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    def reply(body: dict[str, Any]) -> dict[str, Any]:
        asked = fake.messages_of(body)[-1]["content"]
        return {
            "texts": [asked.upper(), "second"],
            "finish_reason": "length",
            "prompt_tokens": 11,
            "completion_tokens": 5,
        }

    fake.reply = reply
    data = post(client, fake).json()
    assert [c["message"]["content"] for c in data["choices"]] == ["HELLO THERE", "second"]
    assert {c["finish_reason"] for c in data["choices"]} == {"length"}
    assert data["usage"]["total_tokens"] == 16


def test_reply_body_is_sent_verbatim(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.reply = lambda body: {"body": {"anything": [1, 2]}}
    assert post(client, fake).json() == {"anything": [1, 2]}


def test_a_bad_reply_is_a_500_naming_the_problem(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.reply = lambda body: {"txet": "typo"}
    response = post(client, fake)
    assert response.status_code == 500
    assert "txet" in response.json()["error"]["message"]

    def broken(body: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    fake.reply = broken
    assert "boom" in post(client, fake).json()["error"]["message"]
    assert fake.outcomes == {"reply_error": 2}


def test_reply_of_normalises_values() -> None:
    assert Reply.of("x") == Reply(text="x")
    assert Reply.of({"texts": ["a", "b"]}).texts == ("a", "b")
    with pytest.raises(UsageError, match="int"):
        Reply.of(3)


# -- faults -----------------------------------------------------------------


def test_schedule_list_injects_faults_by_index(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.schedule = [None, Fault.error(503), Fault.rate_limit(2), Fault.unauthorized()]
    statuses = [post(client, fake) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 503, 429, 401, 200]
    assert statuses[2].headers["retry-after"] == "2"
    assert fake.outcomes == {"ok": 2, "error": 1, "rate_limit": 1, "auth": 1}


def test_schedule_function_and_http_date_retry_after(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    fake.schedule = lambda i: Fault.rate_limit(date) if i % 2 else None
    assert [post(client, fake).status_code for _ in range(4)] == [200, 429, 200, 429]
    assert post(client, fake).status_code == 200
    fake.reset()
    assert post(client, fake).status_code == 200
    assert post(client, fake).headers["retry-after"] == date


def test_malformed_and_drop_faults(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.schedule = [Fault.malformed(), Fault.drop()]
    malformed = post(client, fake)
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, fake)
    assert post(client, fake).status_code == 200
    assert fake.outcomes == {"malformed": 1, "drop": 1, "ok": 1}


def test_timeout_fault_hangs_until_the_client_gives_up(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.schedule = [Fault.timeout()]
    with pytest.raises(httpx.ReadTimeout):
        post(client, fake, timeout=0.3)
    assert post(client, fake).status_code == 200
    assert fake.outcomes["timeout"] == 1


def _statuses(fake: FakeProvider, client: httpx.Client, count: int) -> list[int]:
    return [post(client, fake).status_code for _ in range(count)]


def test_fail_rate_is_deterministic_with_a_seed(client: httpx.Client) -> None:
    faults = [Fault.error(500), Fault.rate_limit(1)]
    with (
        FakeOpenAI(fail_rate=0.5, faults=faults, seed=7) as one,
        FakeOpenAI(fail_rate=0.5, faults=faults, seed=7) as two,
    ):
        first = _statuses(one, client, 40)
        assert first == _statuses(two, client, 40)
        assert {200, 500, 429} <= set(first)
        one.reset()
        assert _statuses(one, client, 40) == first
        assert one.request_count == 40


def test_settings_change_at_runtime(fake: FakeOpenAI, client: httpx.Client) -> None:
    fake.fail_rate = 1.0
    assert post(client, fake).status_code == 500
    fake.configure(fail_rate=0.0, faults=[Fault.unauthorized()], latency=0.01)
    assert post(client, fake).status_code == 200
    assert (fake.fail_rate, fake.latency, fake.faults) == (0.0, 0.01, (Fault.unauthorized(),))
    fake.fail_rate = 1.0
    assert post(client, fake).status_code == 401
    assert fake.schedule is None and fake.reply == "ok"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"latency": -1}, "latency=-1"),
        ({"fail_rate": 1.5}, "fail_rate=1.5"),
        ({"faults": []}, "faults=()"),
        ({"reply": 3}, "reply=3"),
        ({"schedule": Fault.drop()}, "schedule="),
        ({"lag": 1}, "lag"),
    ],
)
def test_bad_settings_are_rejected_naming_them(
    fake: FakeOpenAI, changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(UsageError, match=named):
        fake.configure(**changes)


def test_fault_status_is_checked() -> None:
    with pytest.raises(UsageError, match="700"):
        Fault.error(700)
    assert Fault.drop().kind is FaultKind.DROP


# -- records and redaction ----------------------------------------------------


def test_requests_are_recorded_bounded_and_resettable(client: httpx.Client) -> None:
    with FakeOpenAI(max_recorded=5) as fake:
        for i in range(8):
            post(client, fake, {**CHAT, "seed": i})
        records = fake.requests
        assert [r.index for r in records] == [3, 4, 5, 6, 7]
        assert records[-1].json["seed"] == 7 and records[-1].model == "gpt-test"
        assert records[-1].path == "/v1/chat/completions" and records[-1].method == "POST"
        fake.reset()
        assert (fake.requests, fake.request_count, fake.outcomes) == ([], 0, {})


def test_no_key_value_is_recorded(client: httpx.Client) -> None:
    with FakeOpenAI() as openai, FakeAnthropic() as anthropic, FakeGemini() as gemini:
        post(client, openai)
        client.post(
            f"{anthropic.url}/messages",
            json={"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
        client.post(f"{gemini.url}/models/g:generateContent", json=body, params={"key": KEY})
        client.post(
            f"{gemini.url}/models/g:generateContent", json=body, headers={"x-goog-api-key": KEY}
        )
        records = openai.requests + anthropic.requests + gemini.requests
        assert len(records) == 4 and all(r.api_key_present for r in records)
        assert KEY not in repr(records)
        assert records[0].headers["authorization"] == "Bearer <redacted>"
        assert records[1].headers["x-api-key"] == "<redacted>"
        assert records[2].query["key"] == "<redacted>"
        assert records[3].headers["x-goog-api-key"] == "<redacted>"
        assert gemini.outcomes == {"ok": 2}


# -- each dialect's checks ------------------------------------------------------


def test_openai_rejects_what_the_real_api_rejects(fake: FakeOpenAI, client: httpx.Client) -> None:
    assert post(client, fake, headers={}).status_code == 401
    assert post(client, fake, {"model": "m", "messages": []}).status_code == 400
    assert post(client, fake, {**CHAT, "n": 0}).status_code == 400
    bad_json = client.post(
        f"{fake.url}/chat/completions", content=b"{nope", headers=AUTH | {"content-type": "x"}
    )
    assert bad_json.status_code == 400
    missing = client.post(f"{fake.url}/completions", json=CHAT, headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"
    assert fake.outcomes == {"auth": 1, "bad_request": 3, "not_found": 1}


def test_openai_checks_a_configured_key(client: httpx.Client) -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        assert post(client, fake).status_code == 200
        wrong = post(client, fake, headers={"authorization": "Bearer sk-wrong-key-000000000"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"


def test_llama_cpp_quirk_rejects_json_schema(client: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    with FakeOpenAI(reject_json_schema=True) as fake:
        strict = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        assert post(client, fake, {**CHAT, "response_format": strict}).status_code == 500
        loose = {"type": "json_object", "schema": schema}
        assert post(client, fake, {**CHAT, "response_format": loose}).status_code == 200


def anthropic_post(
    client: httpx.Client, fake: FakeAnthropic, body: dict[str, Any], **headers: str
) -> httpx.Response:
    sent = {"x-api-key": KEY, "anthropic-version": "2023-06-01", **headers}
    return client.post(f"{fake.url}/messages", json=body, headers=sent)


def test_anthropic_shapes_and_checks(client: httpx.Client) -> None:
    good = {
        "model": "claude-x",
        "max_tokens": 10,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi you"}]}],
    }
    with FakeAnthropic(reply=lambda b: {"text": "yo", "finish_reason": "length"}) as fake:
        data = anthropic_post(client, fake, good).json()
        assert data["content"] == [{"type": "text", "text": "yo"}]
        assert data["stop_reason"] == "max_tokens" and data["type"] == "message"
        assert data["usage"] == {"input_tokens": 4, "output_tokens": 1}
        assert anthropic_post(client, fake, {**good, "n": 2}).status_code == 400
        assert anthropic_post(client, fake, {**good, "max_tokens": None}).status_code == 400
        system_in_messages = {**good, "messages": [{"role": "system", "content": "x"}]}
        assert anthropic_post(client, fake, system_in_messages).status_code == 400
        no_version = client.post(f"{fake.url}/messages", json=good, headers={"x-api-key": KEY})
        assert no_version.status_code == 400
        unauth = client.post(
            f"{fake.url}/messages", json=good, headers={"anthropic-version": "2023-06-01"}
        )
        assert unauth.json()["error"]["type"] == "authentication_error"
        assert fake.outcomes == {"ok": 1, "bad_request": 4, "auth": 1}


def test_gemini_shapes_and_checks(client: httpx.Client) -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "a"}]},
            {"role": "user", "parts": [{"text": "q2"}]},
        ],
        "generationConfig": {"candidateCount": 2, "temperature": 0},
    }
    headers = {"x-goog-api-key": KEY}
    with FakeGemini(reply="fine") as fake:
        url = f"{fake.url}/models/gemini-x:generateContent"
        data = client.post(url, json=body, headers=headers).json()
        assert [c["content"]["parts"][0]["text"] for c in data["candidates"]] == ["fine"] * 2
        assert data["candidates"][0]["finishReason"] == "STOP"
        assert data["usageMetadata"]["totalTokenCount"] == 4 + 2
        assert fake.requests[0].model == "gemini-x"
        bad_config = {**body, "generationConfig": {"max_tokens": 3}}
        assert client.post(url, json=bad_config, headers=headers).status_code == 400
        assistant = {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}
        assert client.post(url, json=assistant, headers=headers).status_code == 400
        assert client.post(url, json=body).status_code == 403
        with FakeGemini(api_key="other") as strict:
            strict_url = f"{strict.url}/models/g:generateContent"
            wrong = client.post(strict_url, json=body, headers=headers).json()["error"]
            assert wrong["details"][0]["reason"] == "API_KEY_INVALID"


# -- a prompt longer than the context window ----------------------------------------------


ANTHROPIC_CHAT = {"model": "claude-x", "max_tokens": 10, "messages": CHAT["messages"]}
GEMINI_CHAT = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def test_context_window_fault_answers_as_each_provider_does(client: httpx.Client) -> None:
    fault = Fault.context_window(limit=1)
    with (
        FakeOpenAI(schedule=[fault]) as openai,
        FakeOpenAI(schedule=[fault], context_error="llama_cpp") as llama,
        FakeAnthropic(schedule=[fault]) as anthropic,
        FakeGemini(schedule=[fault]) as gemini,
    ):
        answers = [
            post(client, openai),
            post(client, llama),
            anthropic_post(client, anthropic, ANTHROPIC_CHAT),
            client.post(
                f"{gemini.url}/models/g:generateContent",
                json=GEMINI_CHAT,
                headers={"x-goog-api-key": KEY},
            ),
        ]
        outcomes = [f.outcomes for f in (openai, llama, anthropic, gemini)]
    assert [a.status_code for a in answers] == [400] * 4
    assert outcomes == [{"context_window": 1}] * 4
    assert answers[0].json() == {
        "error": {
            "message": "This model's maximum context length is 1 tokens. However, your "
            "messages resulted in 2 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }
    assert answers[1].json() == {
        "error": {
            "code": 400,
            "message": "request (2 tokens) exceeds the available context size (1 tokens), "
            "try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 2,
            "n_ctx": 1,
        }
    }
    assert answers[2].json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 2 tokens > 1 maximum",
        },
    }
    assert answers[3].json() == {
        "error": {
            "code": 400,
            "message": "The input token count (2) exceeds the maximum number of tokens "
            "allowed (1).",
            "status": "INVALID_ARGUMENT",
        }
    }


def test_context_window_fault_reports_more_than_the_limit(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.schedule = [Fault.context_window(limit=100, status=500)]
    answer = post(client, fake)  # 2 words, yet over the window it claims
    assert answer.status_code == 500
    assert "resulted in 101 tokens" in answer.json()["error"]["message"]


def test_context_window_setting_refuses_long_prompts_only(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    assert fake.context_window is None
    fake.context_window = 2
    assert post(client, fake).status_code == 200  # "hello there": 2 words
    long = {**CHAT, "messages": [{"role": "user", "content": "one two three"}]}
    refused = post(client, fake, long)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "context_length_exceeded"
    fake.configure(context_window=None)
    assert post(client, fake, long).status_code == 200
    assert fake.outcomes == {"ok": 2, "context_window": 1}
    assert fake.prompt_tokens(long) == 3 and fake.prompt_tokens("not a body") == 0


def test_context_window_options_are_checked(fake: FakeOpenAI) -> None:
    for bad in (0, True, 2.5):
        with pytest.raises(UsageError, match="context_window"):
            fake.context_window = bad  # type: ignore[assignment]
    with pytest.raises(UsageError, match="limit"):
        Fault.context_window(limit=0)
    with pytest.raises(UsageError, match="context_error='vllm'"):
        FakeOpenAI(context_error="vllm")  # type: ignore[arg-type]
    assert fake.context_window is None
