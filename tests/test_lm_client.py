"""The LM client actor and handle against real fake provider servers on 127.0.0.1.

Backoff and rate-limit waits run in virtual time (a VirtualSleeper moves a
VirtualClock instead of sleeping); concurrency tests wait on conditions with
deadlines, never on sleeps.
"""

from __future__ import annotations

import gzip
import logging
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import pykka
import pytest
from test_lm_io import gzip_bomb
from transport_helpers import TRANSPORTS
from wait_helpers import wait_until

from dspex.actors._lm._client import ClientSlot, GetStats, LMClient, Reconfigure
from dspex.actors._lm._handle import LMHandle, request_key
from dspex.actors._lm._resilience import CallInfo, LMClientConfig, VirtualSleeper
from dspex.actors._lm._slot import Attempt, Memo
from dspex.actors._lm._types import LMProtocol, LMRequest, LMResponse, Usage
from dspex.errors import (
    ActorStoppedError,
    AuthenticationError,
    CircuitOpenError,
    LMTimeoutError,
    ProviderError,
    UsageError,
)
from dspex.supervision import Supervisor, VirtualClock, which_children
from dspex.testing import FakeAnthropic, FakeOpenAI, Fault

MODEL = "openai/test-model"
KEY = "sk-test-SECRET-0123456789abcdef"


def echo(body: dict[str, Any]) -> str:
    return "echo:" + str(body["messages"][-1]["content"])


class Events:
    """A telemetry sink that records what it is given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, data: Any) -> None:
        with self.lock:
            self.items.append((name, dict(data)))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [data for n, data in self.items if n == name]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply=echo, api_key=KEY) as server:
        yield server


Start = Callable[..., tuple[pykka.ActorRef[Any], LMHandle]]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """The clients a test starts use this transport; each such test runs over both."""
    name: str = request.param
    return name


@pytest.fixture
def start(fake: FakeOpenAI, transport: str) -> Iterator[Start]:
    """Start an LMClient on ``fake`` (kwargs go to LMClient) and a handle on it."""
    refs: list[pykka.ActorRef[Any]] = []

    def run(handle_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        kwargs.setdefault("api_key", KEY)
        config = kwargs.get("config") or LMClientConfig()
        kwargs["config"] = config.replace(transport=transport)
        ref = LMClient.start_link(MODEL, api_base=fake.url, **kwargs)
        refs.append(ref)
        return ref, LMHandle.for_client(ref, **(handle_options or {}))

    yield run
    for ref in refs:
        if ref.is_alive():
            ref.stop(timeout=10)


def virtual(**config: Any) -> dict[str, Any]:
    """LMClient kwargs for virtual time; the clock and sleeper come back too."""
    clock = VirtualClock()
    return {"clock": clock, "sleeper": VirtualSleeper(clock), "config": LMClientConfig(**config)}


USER = [{"role": "user", "content": "hello"}]


# -- the basic call path --------------------------------------------------------------


def test_generate_and_complete_against_the_fake(start: Start, fake: FakeOpenAI) -> None:
    _, handle = start(handle_options={"kwargs": {"temperature": 0.5}})
    assert isinstance(handle, LMProtocol)
    response = handle.generate(USER, {"max_tokens": 20})
    assert response.texts == ["echo:hello"] and response.model == MODEL
    assert handle.complete("hi there") == ["echo:hi there"]
    assert handle.complete(messages=[{"role": "user", "content": "m"}]) == ["echo:m"]
    sent = fake.requests[0]
    assert sent.json["temperature"] == 0.5 and sent.json["max_completion_tokens"] == 20
    assert sent.api_key_present and sent.model == "test-model"


def test_usage_is_accounted_per_model(start: Start, fake: FakeOpenAI) -> None:
    fake.reply = lambda body: {"text": echo(body), "prompt_tokens": 7, "completion_tokens": 3}
    ref, handle = start()
    responses = [handle.complete(f"q{i}") for i in range(5)]
    assert len(responses) == 5
    stats = handle.stats()
    assert stats.usage == Usage(35, 15)
    assert (stats.prompt_tokens, stats.completion_tokens, stats.total_tokens) == (35, 15, 50)
    assert (stats.calls, stats.successes, stats.upstream_requests) == (5, 5, 5)
    assert ref.ask(GetStats(), timeout=5) == stats


def test_bad_calls_raise_clear_errors(start: Start) -> None:
    _, handle = start()
    with pytest.raises(UsageError, match="exactly one of prompt= or messages="):
        handle.complete("a", messages=USER)
    with pytest.raises(UsageError, match="messages="):
        handle.generate("not a list", {})  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="messes"):
        handle.generate([{"messes": 1}], {})  # the provider names the bad message
    with pytest.raises(UsageError, match="timeout"):
        handle.generate(USER, {"timeout": -1})


# -- retries, Retry-After, faults -------------------------------------------------------


def test_retries_server_errors_then_succeeds(start: Start, fake: FakeOpenAI) -> None:
    fake.schedule = [Fault.error(500), Fault.error(503), None]
    events = Events()
    options = virtual(num_retries=3, backoff_base=0.5, backoff_max=8.0)
    sleeper = options["sleeper"]
    _, handle = start(handle_options={"telemetry": events}, telemetry=events, **options)
    assert handle.complete("x") == ["echo:x"]
    assert fake.request_count == 3
    assert len(sleeper.waits) == 2 and 0 <= sleeper.waits[0] <= 0.5 <= 1.0
    assert [e["status"] for e in events.named("lm.request.retry")] == [500, 503]
    [stop] = events.named("lm.request.stop")
    assert stop["retries"] == 2 and stop["cache_hit"] is False and stop["total_tokens"] == 2
    assert len(events.named("lm.request.start")) == 1


def test_retry_after_is_honoured_exactly(start: Start, fake: FakeOpenAI) -> None:
    fake.schedule = [Fault.rate_limit(2.5), None]
    options = virtual()
    _, handle = start(**options)
    assert handle.complete("x") == ["echo:x"]
    assert options["sleeper"].waits == [2.5]
    assert handle.stats().throttled == 1 and fake.request_count == 2


def test_dropped_connections_and_timeouts_are_retried(start: Start, fake: FakeOpenAI) -> None:
    fake.schedule = [Fault.drop(), Fault.timeout(), None]
    events = Events()
    _, handle = start(telemetry=events, **virtual(timeout=0.3))
    assert handle.complete("x") == ["echo:x"]
    errors = [e["error"] for e in events.named("lm.request.retry")]
    assert errors == ["ProviderError", "LMTimeoutError"]


def test_exhausted_retries_raise_the_provider_error(start: Start, fake: FakeOpenAI) -> None:
    fake.schedule = [Fault.error(500)] * 3
    events = Events()
    _, handle = start(handle_options={"telemetry": events}, **virtual(num_retries=2))
    with pytest.raises(ProviderError, match="HTTP 500"):
        handle.complete("x")
    assert fake.request_count == 3
    [failure] = events.named("lm.request.exception")
    assert failure["error"] == "ProviderError" and failure["retries"] == 2


def test_authentication_failures_are_not_retried(start: Start, fake: FakeOpenAI) -> None:
    _, handle = start(api_key="sk-wrong-key-000000000000")
    with pytest.raises(AuthenticationError) as info:
        handle.complete("x")
    assert fake.request_count == 1
    assert "sk-wrong-key" not in str(info.value)


def test_per_call_num_retries_and_reconfigure(start: Start, fake: FakeOpenAI) -> None:
    ref, handle = start(**virtual(num_retries=3))
    fake.schedule = [Fault.error(500), None]
    with pytest.raises(ProviderError):
        handle.generate(USER, {"num_retries": 0})
    assert fake.request_count == 1
    ref.ask(Reconfigure(LMClientConfig(num_retries=0)), timeout=5)
    fake.reset()
    fake.schedule = [Fault.error(500), None]
    with pytest.raises(ProviderError):
        handle.complete("again")
    assert fake.request_count == 1 and handle.slot.config.num_retries == 0


# -- circuit breaker and rate limiter ------------------------------------------------


def test_circuit_opens_fails_fast_half_opens_and_closes(start: Start, fake: FakeOpenAI) -> None:
    options = virtual(num_retries=0, breaker_failure_threshold=3, breaker_reset_timeout=30.0)
    clock: VirtualClock = options["clock"]
    _, handle = start(**options)
    fake.schedule = [Fault.error(500)] * 3
    for i in range(3):
        with pytest.raises(ProviderError):
            handle.complete(f"fail {i}")
    with pytest.raises(CircuitOpenError) as info:
        handle.complete("fast")
    assert fake.request_count == 3  # failing fast: no upstream traffic
    assert info.value.retry_at == 30.0
    clock.advance(29.0)
    with pytest.raises(CircuitOpenError):
        handle.complete("still open")
    clock.advance(1.0)
    assert handle.complete("probe") == ["echo:probe"]  # the half-open probe
    assert handle.complete("closed") == ["echo:closed"]
    assert fake.request_count == 5
    assert handle.stats().circuit_rejections == 2


def test_rate_limit_waits_are_computed_in_virtual_time(start: Start, fake: FakeOpenAI) -> None:
    options = virtual(rpm=2)
    _, handle = start(**options)
    for i in range(4):
        handle.complete(f"q{i}")
    assert options["sleeper"].waits == [pytest.approx(30.0), pytest.approx(30.0)]
    assert fake.request_count == 4


# -- single-flight and the cache hook ----------------------------------------------------


def test_256_identical_concurrent_calls_make_one_upstream_request(
    start: Start, fake: FakeOpenAI
) -> None:
    gate = threading.Event()

    def held(body: dict[str, Any]) -> str:
        gate.wait(10)  # hold the one upstream request until all callers have joined
        return "the shared answer"

    fake.reply = held
    _, handle = start()
    store: dict[str, LMResponse] = {}  # only cached calls share a flight
    handle.attach_cache(store.get, store.__setitem__)
    with ThreadPoolExecutor(256) as pool:
        futures = [pool.submit(handle.complete, "same question") for _ in range(256)]
        wait_until(lambda: handle.stats().calls == 256)
        gate.set()
        answers = [f.result(timeout=30) for f in futures]
    assert answers == [["the shared answer"]] * 256
    assert fake.request_count == 1
    stats = handle.stats()
    assert stats.shared == 255 and stats.upstream_requests == 1
    assert stats.usage == Usage(2, 3)  # word counts of one upstream reply, counted once


def test_cache_hooks_short_circuit_the_client(start: Start, fake: FakeOpenAI) -> None:
    store: dict[str, LMResponse] = {}
    events = Events()
    _, handle = start(handle_options={"telemetry": events})
    handle.attach_cache(store.get, store.__setitem__)
    first = handle.generate(USER, {})
    second = handle.generate(USER, {})
    assert not first.cache_hit and second.cache_hit and second.texts == first.texts
    assert fake.request_count == 1 and len(store) == 1
    third = handle.generate(USER, {"cache": False})
    assert not third.cache_hit and fake.request_count == 2
    assert [e["cache_hit"] for e in events.named("lm.request.stop")] == [False, True, False]


def test_an_answer_is_in_the_cache_before_its_flight_ends(start: Start, fake: FakeOpenAI) -> None:
    # The first caller is slow to write its answer to the cache (a busy machine): an
    # identical request arriving meanwhile must neither go upstream nor wait for it.
    store: dict[str, LMResponse] = {}
    in_put, release = threading.Event(), threading.Event()

    def slow_put(key: str, value: LMResponse) -> None:
        in_put.set()
        assert release.wait(10)
        store[key] = value

    _, handle = start()
    handle.attach_cache(store.get, slow_put)
    handle.memo = Memo(store.get, lambda k, v: store.__setitem__(k, replace(v, cache_hit=True)))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(handle.generate, USER, {})
        assert in_put.wait(10)  # answered; its caller has not written the cache yet
        second = handle.generate(USER, {})
        release.set()
        assert not first.result(timeout=10).cache_hit
    assert second.cache_hit and second.texts == ["echo:hello"]
    assert fake.request_count == 1


def test_providers_without_native_n_are_fanned_out() -> None:
    with FakeAnthropic(reply=echo, api_key=KEY) as fake:
        ref = LMClient.start_link("anthropic/claude", api_base=fake.url, api_key=KEY)
        try:
            handle = LMHandle.for_client(ref)
            response = handle.generate(USER, {"n": 3})
            assert response.texts == ["echo:hello"] * 3
            assert fake.request_count == 3
            assert response.usage == Usage(3, 3)
        finally:
            ref.stop(timeout=10)


def test_proxied_urls_go_through_httpx(fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake answers absolute-URI requests too, so it can stand in for a proxy.
    port = urlsplit(fake.url).port
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    ref = LMClient.start_link(MODEL, api_base="http://llm.invalid/v1", api_key=KEY)
    try:
        assert LMHandle.for_client(ref).complete("via proxy") == ["echo:via proxy"]
        assert fake.requests[0].headers["host"] == "llm.invalid"
    finally:
        ref.stop(timeout=10)


def test_the_transport_setting_picks_the_http_client(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = urlsplit(fake.url).port
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}/unused")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # bypassed: auto stays on httptools
    used = {}
    for setting in ("auto", "httptools", "h11", "httpx"):
        config = LMClientConfig(transport=setting)
        ref = LMClient.start_link(MODEL, api_base=fake.url, api_key=KEY, config=config)
        try:
            handle = LMHandle.for_client(ref)
            assert handle.complete(setting) == [f"echo:{setting}"]
            assert handle.slot.endpoint is not None
            used[setting] = handle.slot.endpoint.transports
        finally:
            ref.stop(timeout=10)
    assert used == {
        "auto": ("httptools",),
        "httptools": ("httptools",),
        "h11": ("h11",),
        "httpx": ("httpx",),
    }


# -- bounded, decoded response bodies ---------------------------------------------------


def test_a_gzip_bomb_fails_once_unretried_with_memory_bounded(
    start: Start, fake: FakeOpenAI
) -> None:
    # Defect 5: a small gzip body inflating past the limit used to be read whole.
    limit = LMClientConfig().max_response_bytes
    assert limit == 32 << 20
    bomb = gzip_bomb(2 * limit)
    fake.schedule = [Fault.raw(bomb, headers={"content-encoding": "gzip"})] * 4
    events = Events()
    _, handle = start(telemetry=events, **virtual(num_retries=3))
    tracemalloc.start()
    try:
        with pytest.raises(ProviderError) as info:
            handle.complete("x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = info.value
    assert err.retryable is False and err.model == MODEL and err.status == 200
    assert MODEL in str(err) and "lm_client.max_response_bytes = 33554432 bytes" in str(err)
    assert "DSPEX_LM_CLIENT__MAX_RESPONSE_BYTES" in str(err) and "not retried" in str(err)
    assert fake.request_count == 1 and events.named("lm.request.retry") == []
    assert peak < limit + (16 << 20)  # at most the limit; inflating it whole takes 64 MiB


def test_an_oversized_body_fails_once_naming_the_limit(start: Start, fake: FakeOpenAI) -> None:
    limit = 1 << 20
    fake.schedule = [Fault.raw(b'{"pad": "' + b"x" * (3 * limit) + b'"}')] * 4
    _, handle = start(**virtual(num_retries=3, max_response_bytes=limit))
    with pytest.raises(ProviderError, match=r"max_response_bytes = 1048576 bytes \(1 MiB\)"):
        handle.complete("x")
    assert fake.request_count == 1


def test_a_body_that_is_not_gzip_is_a_retried_provider_error(
    start: Start, fake: FakeOpenAI
) -> None:
    # Defect 6a: this raised a bare zlib.error, unnamed and never retried.
    lying = Fault.raw(b'{"choices": []}', headers={"content-encoding": "gzip"})
    fake.schedule = [lying, lying, lying]
    _, handle = start(**virtual(num_retries=2))
    with pytest.raises(ProviderError) as info:
        handle.complete("x")
    err = info.value
    assert err.retryable is True and err.model == MODEL and err.status == 200
    assert MODEL in str(err) and "Content-Encoding 'gzip'" in str(err)
    assert "malformed reply" in str(err)
    assert fake.request_count == 3  # retried like any malformed reply
    fake.reset()
    packed = gzip.compress(b'{"choices": [{"message": {"content": "fine"}}]}')
    fake.schedule = [lying, Fault.raw(packed, headers={"content-encoding": "gzip"})]
    assert handle.complete("y") == ["fine"]


# -- request keys -----------------------------------------------------------------------


def test_request_key_is_canonical_and_never_holds_secrets() -> None:
    base = LMRequest(MODEL, ({"role": "user", "content": "x"},), {"temperature": 0, "n": 1})
    same = LMRequest(MODEL, ({"content": "x", "role": "user"},), {"n": 1, "temperature": 0})
    assert request_key(base, "http://a") == request_key(same, "http://a")
    assert request_key(base, "http://a") != request_key(base, "http://b")
    noisy = LMRequest(
        MODEL,
        base.messages,
        {
            "temperature": 0,
            "n": 1,
            "api_key": KEY,
            "timeout": 3,
            "cache": False,
            "extra_headers": {"Authorization": f"Bearer {KEY}"},
        },
    )
    keyed = LMRequest(MODEL, base.messages, {**base.params, "extra_headers": {}})
    assert request_key(noisy, "http://a") == request_key(keyed, "http://a")
    rollout = LMRequest(MODEL, base.messages, {**base.params, "rollout_id": 1})
    assert request_key(rollout, "http://a") != request_key(base, "http://a")
    key = request_key(base)
    assert len(key) == 64 and int(key, 16) >= 0


# -- caller timeouts and stopping ------------------------------------------------------------


def test_call_timeout_abandons_the_upstream_work(start: Start, fake: FakeOpenAI) -> None:
    fake.latency = 30.0
    _, handle = start(handle_options={"call_timeout": 0.3})
    with pytest.raises(LMTimeoutError, match="call timeout"):
        handle.complete("slow")
    endpoint = handle.slot.endpoint
    assert endpoint is not None
    wait_until(lambda: endpoint.in_flight == 0)


def test_stop_closes_the_loop_thread_and_fails_callers_fast(start: Start) -> None:
    ref, handle = start()
    assert handle.complete("x") == ["echo:x"]
    assert any(t.name.startswith("dspex-lm-") for t in threading.enumerate())
    ref.stop(timeout=10)
    assert not any(t.name.startswith("dspex-lm-") for t in threading.enumerate())
    with pytest.raises(ActorStoppedError, match="has stopped"):
        handle.complete("after stop")


def test_stop_cancels_calls_in_flight(start: Start, fake: FakeOpenAI) -> None:
    fake.latency = 30.0
    ref, handle = start()
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(handle.complete, f"q{i}") for i in range(4)]
        wait_until(lambda: fake.in_flight == 4)
        ref.stop(timeout=10)
        for future in futures:
            with pytest.raises(ActorStoppedError):
                future.result(timeout=10)


def test_a_late_reply_after_orphaning_is_dropped() -> None:
    attempt = Attempt()
    attempt.orphan(1)
    attempt.resolve(LMResponse(()), CallInfo())  # the dead incarnation answers late
    assert attempt.wait(1) and attempt.orphaned and attempt.value is None
    answered = Attempt()
    answered.resolve(LMResponse(()), CallInfo(retries=1))
    answered.orphan(1)
    assert answered.wait(1) and not answered.orphaned and answered.info.retries == 1
    assert not answered.abandon()


# -- restarts lose nothing ------------------------------------------------------------------


class CrashableClient(LMClient):
    """An LMClient that crashes (an abnormal exit) when told "crash"."""

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("injected crash")
        return super().on_receive(message)


@pytest.mark.parametrize("kill", ["crash", "stop"])
def test_killing_the_client_during_200_calls_loses_none(
    fake: FakeOpenAI, kill: str, transport: str
) -> None:
    fake.latency = 30.0  # the first incarnation never answers in time
    slot = ClientSlot(MODEL, fake.url, LMClientConfig(transport=transport))
    spec = CrashableClient.child_spec(MODEL, slot=slot, api_key=KEY)
    sup = Supervisor.start_link([spec], max_restarts=3, max_seconds=60)
    try:
        handle = LMHandle(slot, call_timeout=60)
        with ThreadPoolExecutor(200) as pool:
            futures = [pool.submit(handle.complete, f"q{i}") for i in range(200)]
            wait_until(lambda: fake.in_flight == 200, timeout=30)
            first = slot.endpoint
            assert first is not None
            fake.latency = 0.0  # the next incarnation gets quick answers
            [child] = which_children(sup)
            assert child.ref is not None
            if kill == "crash":
                child.ref.tell("crash")
            else:
                child.ref.stop(timeout=10)
            answers = [f.result(timeout=60) for f in futures]
        assert answers == [[f"echo:q{i}"] for i in range(200)]
        assert handle.resubmits == 200  # each call orphaned once, answered once
        assert slot.incarnations == 2
        assert slot.endpoint is not None and slot.endpoint.epoch != first.epoch
        assert fake.request_count == 400
        assert handle.stats().successes == 200
    finally:
        sup.stop(timeout=20)


# -- secrets ----------------------------------------------------------------------------------


def test_api_key_never_appears_in_logs_reprs_keys_or_events(
    start: Start, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    events = Events()
    ref, handle = start(
        handle_options={"telemetry": events, "kwargs": {"api_key": KEY}},
        telemetry=events,
        **virtual(num_retries=1),
    )
    handle.complete("fine")
    fake.schedule = [None, Fault.error(500), Fault.error(500)]
    with pytest.raises(ProviderError) as failed:
        handle.complete("fails")
    bad_ref = LMClient.start_link(MODEL, api_base=fake.url, api_key=KEY + "-wrong")
    try:
        with pytest.raises(AuthenticationError) as rejected:
            LMHandle.for_client(bad_ref).complete("rejected")
    finally:
        bad_ref.stop(timeout=10)
    request, _, _ = handle.build(USER, {"api_key": KEY})
    texts = [
        caplog.text,
        repr(handle),
        repr(handle.slot),
        repr(ref),
        str(ref),
        repr(ref.proxy().actor_ref),
        str(events.items),
        handle.request_key(request),
        repr(request),
        str(failed.value),
        str(rejected.value),
        repr(handle.slot.endpoint),
    ]
    for text in texts:
        assert KEY not in text
    assert "fine" in str(events.items)  # the events were captured at all
