"""LM calls end to end: ``dspex.LM`` + ``dspex.Predict`` under ``dspex.start()``
against the fake provider servers (real HTTP on 127.0.0.1).

The resilience details (backoff shapes, breaker states, rate limits) have unit
tests in ``test_lm_client.py`` and ``test_resilience.py``; here they are shown
working through the runtime's wiring.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers, lm_client_refs, make_lm
from wait_helpers import wait_until

import dspex
from dspex.actors._lm._client import Reconfigure
from dspex.errors import AuthenticationError, CircuitOpenError, ProviderError, UsageError
from dspex.supervision import VirtualClock
from dspex.testing import FakeAnthropic, FakeGemini, FakeOpenAI, FakeProvider, Fault


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


# -- providers ---------------------------------------------------------------------------


def _openai_body(body: dict[str, Any], path: str) -> None:
    assert path == "/v1/chat/completions" and body["model"] == "gpt-test"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def _anthropic_body(body: dict[str, Any], path: str) -> None:
    assert path == "/v1/messages" and body["model"] == "claude-test"
    assert body["system"] and [m["role"] for m in body["messages"]] == ["user"]
    assert isinstance(body["max_tokens"], int)


def _gemini_body(body: dict[str, Any], path: str) -> None:
    assert path == "/v1beta/models/gemini-test:generateContent"
    system = body.get("systemInstruction") or body.get("system_instruction")
    assert system and [c.get("role", "user") for c in body["contents"]] == ["user"]


PROVIDERS = [
    pytest.param(FakeOpenAI, "openai/gpt-test", _openai_body, id="openai"),
    pytest.param(FakeAnthropic, "anthropic/claude-test", _anthropic_body, id="anthropic"),
    pytest.param(FakeGemini, "gemini/gemini-test", _gemini_body, id="gemini"),
]


@pytest.mark.parametrize(("fake_class", "model", "check_body"), PROVIDERS)
def test_each_provider_answers_a_predict(
    start_runtime: StartRuntime,
    fake_class: type[FakeProvider],
    model: str,
    check_body: Any,
) -> None:
    start_runtime()
    with fake_class(api_key=SECRET) as server:
        echo_answers(server, prefix="A: ")
        dspex.configure(lm=dspex.LM(model, api_base=server.url, api_key=SECRET, temperature=0.25))
        prediction = dspex.Predict("question -> answer")(question="What is 2+2?")
        assert prediction.answer == "A: What is 2+2?"
        [request] = server.requests
        check_body(request.json, request.path)
        assert request.api_key_present
        conversation = server.messages_of(request.json)
        assert "`question`" in conversation[0]["content"]  # ChatAdapter's system prompt
        assert "What is 2+2?" in conversation[-1]["content"]
        assert "0.25" in json.dumps(request.json)  # the LM's temperature went on the wire
        assert SECRET not in json.dumps(request.json) + repr(request.headers)


def test_lm_called_directly_returns_lists_of_strings(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = make_lm(fake)
    assert lm("hello there") == [chat_answer("hello there")]
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "and you"},
    ]
    assert lm(messages=messages) == [chat_answer("and you")]
    fake.reply = lambda body: {"texts": ["one", "two"]}
    assert lm("two please", n=2) == ["one", "two"]
    assert fake.requests[1].json["messages"] == messages
    assert fake.requests[2].json["n"] == 2
    response = lm.forward("hello there")  # the first call's answer, from the cache
    assert response.cache_hit and response.texts == [chat_answer("hello there")]
    assert fake.request_count == 3


def test_a_model_configured_in_settings_needs_no_arguments(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(
        models={
            "openai/test-model": {"api_base": fake.url, "api_key": SECRET, "params": {"top_p": 0.5}}
        }
    )
    lm = dspex.LM("openai/test-model")  # endpoint, key and params come from the settings
    assert lm("configured") == [chat_answer("configured")]
    [request] = fake.requests
    assert request.api_key_present and request.json["top_p"] == 0.5


def test_start_with_a_model_id_gives_programs_that_lm(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    # Regression: start(lm="<id>") used to set the programs' LM to the bare string.
    rt = start_runtime(
        lm="openai/test-model",
        models={"openai/test-model": {"api_base": fake.url, "api_key": SECRET}},
    )
    assert rt.settings.lm == "openai/test-model"
    answer = dspex.Predict("question -> answer")(question="by id")
    assert answer.answer == "by id"
    assert fake.request_count == 1
    assert fake.requests[0].model == "test-model"


# -- resilience through the runtime ---------------------------------------------------------


def test_retries_retry_after_and_the_circuit_breaker(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    clock = VirtualClock()
    rt = start_runtime(
        clock=clock,
        lm_client={
            "num_retries": 2,
            "backoff_base": 0.5,
            "breaker_failure_threshold": 2,
            "breaker_reset_timeout": 30.0,
        },
    )
    lm = make_lm(fake, cache=False)
    fake.schedule = [Fault.error(500), Fault.rate_limit(7), None]
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(lm, "retried")
        wait_until(lambda: clock.wait_for_sleepers(1, timeout=0.1), what="backoff after 500")
        clock.advance(0.5)  # the jittered backoff is at most backoff_base
        wait_until(lambda: fake.request_count == 2, what="the retry after the 500")
        assert clock.wait_for_sleepers(1, timeout=10)  # now waiting out Retry-After
        clock.advance(6.9)
        assert clock.wait_for_sleepers(1, timeout=0.1) and not call.done()
        clock.advance(0.1)
        assert call.result(timeout=10) == [chat_answer("retried")]
    assert fake.request_count == 3
    stats = lm.handle(rt).stats()
    assert stats.retries == 2 and stats.throttled == 1

    fake.schedule = lambda i: Fault.error(500) if i in (3, 4) else None
    for i in range(2):
        with pytest.raises(ProviderError):
            lm(f"fails {i}", num_retries=0)
    with pytest.raises(CircuitOpenError):
        lm("fails fast", num_retries=0)
    assert fake.request_count == 5  # the open circuit sent nothing upstream
    clock.advance(30.0)
    assert lm("probe") == [chat_answer("probe")]  # half-open probe succeeds: closed again
    assert lm("closed") == [chat_answer("closed")]
    model = rt.metrics()["models"]["openai/test-model"]
    assert model["errors"] == {"ProviderError": 2, "CircuitOpenError": 1}


def test_configure_reconfigures_running_clients(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(lm_client={"num_retries": 3, "backoff_base": 0.01, "backoff_max": 0.01})
    lm = make_lm(fake, cache=False)
    fake.schedule = [Fault.error(500), None]
    assert lm("retried") == [chat_answer("retried")]  # one retry under the first settings
    assert fake.request_count == 2
    dspex.configure(lm_client={"num_retries": 0})  # the running client adopts it
    fake.reset()
    fake.schedule = [Fault.error(500), None]
    with pytest.raises(ProviderError):
        lm("not retried")
    assert fake.request_count == 1


def test_transport_and_response_limit_come_from_settings_or_the_lm(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime(lm_client={"transport": "httpx", "max_response_bytes": 4096})
    lm = make_lm(fake, cache=False)
    assert lm("small") == [chat_answer("small")]
    endpoint = lm.handle(rt).slot.endpoint
    assert endpoint is not None and endpoint.transports == ("httpx",)
    fake.schedule = lambda i: Fault.raw(b'{"pad": "' + b"x" * 5000 + b'"}') if i == 1 else None
    with pytest.raises(ProviderError, match="max_response_bytes = 4096 bytes"):
        lm("too big")
    assert fake.request_count == 2  # not retried

    direct = make_lm(fake, cache=False, transport="h11", max_response_bytes=1 << 20)
    assert direct("direct") == [chat_answer("direct")]
    endpoint = direct.handle(rt).slot.endpoint
    assert endpoint is not None and endpoint.transports == ("h11",)
    assert endpoint.config.max_response_bytes == 1 << 20
    with pytest.raises(
        UsageError, match=r"transport='curl'.*'auto', 'httptools', 'h11' or 'httpx'"
    ):
        dspex.LM("openai/m", transport="curl")


def test_256_identical_in_flight_predicts_make_one_upstream_request(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    release = threading.Event()

    def held(body: dict[str, Any]) -> str:
        release.wait(30)  # hold the single upstream request until every caller joined it
        return chat_answer("shared")

    fake.reply = held
    # Cached (the default): nothing is in the cache until the one request is
    # released, so only in-flight sharing can explain one request.
    lm = make_lm(fake)
    handle = lm.handle(rt)
    dspex.configure(lm=lm)
    qa = dspex.Predict("question -> answer")
    barrier = threading.Barrier(256)

    def ask(_: int) -> str:
        barrier.wait(30)
        answer: str = qa(question="the same question").answer
        return answer

    with ThreadPoolExecutor(256) as pool:
        futures = [pool.submit(ask, i) for i in range(256)]
        wait_until(
            lambda: handle.stats().calls == 256 and fake.request_count == 1,
            what="all 256 calls in flight, one request upstream",
        )
        assert not any(f.done() for f in futures)
        release.set()
        answers = [f.result(timeout=60) for f in futures]
    assert answers == ["shared"] * 256
    assert fake.request_count == 1
    stats = handle.stats()
    assert stats.upstream_requests == 1 and stats.shared == 255


@pytest.mark.parametrize("switch", ["lm", "call", "acall"])
def test_uncached_identical_calls_in_flight_each_go_upstream(
    start_runtime: StartRuntime, fake: FakeOpenAI, switch: str
) -> None:
    """cache=False means a fresh answer per call (as in DSPy): no in-flight sharing."""
    rt = start_runtime()
    numbers = itertools.count()

    def numbered(body: dict[str, Any]) -> str:
        return chat_answer(f"sample {next(numbers)}")  # the fake's loop thread: no lock needed

    # Every request is held a second upstream, so the eight (released together)
    # overlap there: shared flights would show as fewer requests and one answer.
    fake.configure(reply=numbered, latency=1.0)
    lm = make_lm(fake) if switch == "call" else make_lm(fake, cache=False)
    handle = lm.handle(rt)
    dspex.configure(lm=lm)
    qa = dspex.Predict("question -> answer")
    config = {"cache": False} if switch == "call" else {}
    if switch == "acall":

        async def ask_all() -> list[str]:
            calls = [qa.acall(question="the same question") for _ in range(8)]
            return [p.answer for p in await asyncio.gather(*calls)]

        answers = sorted(asyncio.run(asyncio.wait_for(ask_all(), 60)))
    else:
        barrier = threading.Barrier(8)

        def ask(_: int) -> str:
            barrier.wait(30)
            answer: str = qa(question="the same question", config=config).answer
            return answer

        with ThreadPoolExecutor(8) as pool:
            answers = sorted(pool.map(ask, range(8), timeout=60))
    assert answers == sorted(f"sample {n}" for n in range(8))
    stats = handle.stats()
    assert stats.upstream_requests == 8 and stats.shared == 0


@pytest.mark.parametrize("kill", ["stop", "crash"])
def test_killing_the_lm_actor_during_200_calls_loses_none(
    start_runtime: StartRuntime, fake: FakeOpenAI, kill: str
) -> None:
    rt = start_runtime()
    lm = make_lm(fake, timeout=120, num_retries=0)
    handle = lm.handle(rt)
    dspex.configure(lm=lm)
    qa = dspex.Predict("question -> answer")
    fake.latency = 60.0  # the first incarnation never gets an answer
    with ThreadPoolExecutor(200) as pool:
        futures = [pool.submit(lambda i: qa(question=f"q{i}").answer, i) for i in range(200)]
        wait_until(lambda: fake.in_flight == 200, what="200 requests at the server")
        [client] = lm_client_refs(rt)
        fake.latency = 0.0  # the next incarnation answers at once
        if kill == "stop":
            client.stop(timeout=10)
        else:  # a handler that raises on the tell path kills the actor
            client.tell(Reconfigure("not a config"))  # type: ignore[arg-type]
        answers = [f.result(timeout=90) for f in futures]
    assert answers == [f"q{i}" for i in range(200)]  # each its own answer, none lost
    assert handle.resubmits == 200  # each orphaned once, answered once
    assert handle.slot.incarnations == 2
    assert fake.request_count == 400
    assert handle.stats().successes == 200
    [new_client] = lm_client_refs(rt)
    assert new_client is not client and new_client.is_alive()
    assert rt.metrics()["supervision"]["restarts"] >= 1


# -- secrets -------------------------------------------------------------------------------


def test_the_api_key_appears_in_no_log_output_cache_or_saved_file(
    start_runtime: StartRuntime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    rt = start_runtime(
        telemetry={"format": "json", "level": "debug"},
        lm_client={"num_retries": 1, "backoff_base": 0.01, "backoff_max": 0.01},
    )
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        lm = make_lm(server)
        dspex.configure(lm=lm)
        qa = dspex.Predict("question -> answer")
        assert qa(question="fine").answer == "fine"
        assert qa(question="fine").answer == "fine"  # a cache hit
        server.schedule = lambda i: Fault.error(500) if i in (1, 2) else None
        with pytest.raises(ProviderError) as server_error:
            qa(question="server error")
        wrong = dspex.LM("openai/test-model", api_base=server.url, api_key=SECRET + "-wrong")
        with pytest.raises(AuthenticationError) as auth_error:
            qa(question="rejected", lm=wrong)
        with pytest.raises(AuthenticationError) as auth_direct:
            wrong("rejected directly")
        history = dspex.inspect_history(5)
        tree_text = str(rt.tree())
        metrics_text = repr(rt.metrics())
        qa.lm = lm
        qa.save(tmp_path / "program.json")
        reprs = [repr(lm), repr(wrong), repr(lm.handle()), repr(rt), repr(dspex.settings)]
        recorded = repr(server.requests)
        dumped = json.dumps(lm.dump_state()) + json.dumps(wrong.dump_state())
    rt.stop()  # flushes telemetry and the cache to their outputs
    captured = capfd.readouterr()
    cache_bytes = b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir() if p.is_file())
    telemetry_lines = [line for line in captured.err.splitlines() if line.startswith("{")]
    events = [json.loads(line)["event"] for line in telemetry_lines]
    assert "lm.request.stop" in events and "lm.request.exception" in events
    assert b"fine" in cache_bytes  # the cache file holds the answers...
    assert SECRET.encode() not in cache_bytes  # ...and never the key
    texts = {
        "log records": caplog.text,
        "stderr (telemetry)": captured.err,
        "stdout": captured.out,
        "errors": " ".join(str(e.value) for e in (server_error, auth_error, auth_direct)),
        "error reprs": " ".join(repr(e.value) for e in (server_error, auth_error, auth_direct)),
        "history": history,
        "tree": tree_text,
        "metrics": metrics_text,
        "saved program": (tmp_path / "program.json").read_text(),
        "reprs": " ".join(reprs),
        "fake's records": recorded,
        "dump_state": dumped,
    }
    for where, text in texts.items():
        assert SECRET not in text, f"the API key leaked into {where}"
        assert SECRET[-12:] not in text, f"a tail of the API key leaked into {where}"
