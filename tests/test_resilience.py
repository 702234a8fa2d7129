"""Resilience primitives of the LM client, in virtual time: retry policy, circuit
breaker, rate limiter, single-flight, the composed pipeline and the I/O loop."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest

from dspex.actors._lm._resilience import (
    BreakerState,
    CallInfo,
    CallOptions,
    CircuitBreaker,
    LMClientConfig,
    Pipeline,
    RateLimiter,
    RetryPolicy,
    SingleFlight,
    TokenBucket,
    UsageMeter,
    VirtualSleeper,
    counts_as_failure,
    estimate_tokens,
    sleeper_for,
)
from dspex.actors._lm._types import Completion, LMRequest, LMResponse, Usage
from dspex.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConfigError,
    LMError,
    LMTimeoutError,
    ProviderError,
    RateLimitError,
    UsageError,
)
from dspex.supervision import SystemClock, VirtualClock

# -- retry policy ---------------------------------------------------------------------


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(num_retries=10, backoff_base=0.5, backoff_max=4.0, rng=random.Random(7))
    for k, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]):
        delays = [policy.backoff(k) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a constant
        assert min(delays) < ceiling * 0.2


def test_retry_after_replaces_the_backoff_exactly() -> None:
    policy = RetryPolicy(num_retries=3, backoff_base=10.0, backoff_max=10.0)
    assert policy.next_delay(RateLimitError("slow down", retry_after=2.5), 0) == 2.5
    assert policy.next_delay(RateLimitError("slow down", retry_after=0.0), 2) == 0.0


def test_policy_gives_up_when_it_should() -> None:
    policy = RetryPolicy(num_retries=2, max_retry_after=60.0)
    assert policy.next_delay(ProviderError("500"), 2) is None  # retries used up
    assert policy.next_delay(AuthenticationError("401"), 0) is None  # not retryable
    assert policy.next_delay(LMError("400", retryable=False), 0) is None
    assert policy.next_delay(ValueError("bug"), 0) is None  # not an LM failure
    assert policy.next_delay(RateLimitError("x", retry_after=600), 0) is None  # too long
    assert policy.next_delay(LMTimeoutError("slow"), 1) is not None


@pytest.mark.parametrize(
    "kwargs",
    [{"num_retries": -1}, {"backoff_base": -1.0}, {"backoff_base": 2.0, "backoff_max": 1.0}],
)
def test_policy_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)


# -- circuit breaker -----------------------------------------------------------------


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(breaker.acquire(), ProviderError("HTTP 500"))


def test_breaker_opens_after_threshold_and_fails_fast() -> None:
    clock = VirtualClock(100.0)
    breaker = CircuitBreaker(3, 30.0, clock=clock, model="openai/m")
    _fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    _fail(breaker, 1)
    assert breaker.state.value == "open"
    with pytest.raises(CircuitOpenError, match="openai/m") as info:
        breaker.acquire()
    assert info.value.retry_at == 130.0
    assert not info.value.retryable


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(2, 1.0, clock=VirtualClock())
    _fail(breaker, 1)
    breaker.record(breaker.acquire(), None)
    _fail(breaker, 1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 1


def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    _fail(breaker, 1)
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe.probe
    with pytest.raises(CircuitOpenError, match="probe"):
        breaker.acquire()
    breaker.record(probe, None)
    assert breaker.state.value == "closed"
    assert not breaker.acquire().probe


def test_failed_probe_reopens_for_another_reset_timeout() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(1, 10.0, clock=clock)
    _fail(breaker, 1)
    clock.advance(10.0)
    breaker.record(breaker.acquire(), LMTimeoutError("slow"))
    assert breaker.state is BreakerState.OPEN
    clock.advance(5.0)
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.advance(5.0)
    assert breaker.acquire().probe
    assert breaker.times_opened == 2


def test_a_probe_without_verdict_frees_the_probe_slot() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    _fail(breaker, 1)
    clock.advance(1.0)
    breaker.record(breaker.acquire(), RateLimitError("429"))  # no verdict on health
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire().probe


def test_late_outcomes_of_old_permits_do_not_flip_the_state() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(1, 1.0, clock=clock)
    old = breaker.acquire()
    _fail(breaker, 1)
    breaker.record(old, ProviderError("late"))  # already open: must not extend the wait
    clock.advance(1.0)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(old, None)  # a stale success must not close it either
    assert breaker.state is BreakerState.HALF_OPEN


def test_which_errors_count_against_the_provider() -> None:
    assert counts_as_failure(ProviderError("500"))
    assert counts_as_failure(LMTimeoutError("slow"))
    assert not counts_as_failure(RateLimitError("429"))
    assert not counts_as_failure(AuthenticationError("401"))
    assert not counts_as_failure(ProviderError("400", retryable=False))
    assert not counts_as_failure(ValueError("bug"))


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(UsageError, match="failure_threshold"):
        CircuitBreaker(0)
    with pytest.raises(UsageError, match="reset_timeout"):
        CircuitBreaker(1, 0)


# -- rate limiter --------------------------------------------------------------------


def test_bucket_refills_continuously() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(60, clock)  # one per second, a minute's burst
    assert [bucket.reserve(1) for _ in range(60)] == [0.0] * 60
    assert bucket.reserve(1) == pytest.approx(1.0)
    assert bucket.reserve(1) == pytest.approx(2.0)  # queued behind the first waiter
    clock.advance(2.0)
    assert bucket.available() == pytest.approx(0.0)


def test_rpm_limit_computes_waits_in_virtual_time() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=2, clock=clock)
    assert limiter.reserve(10) == 0.0
    assert limiter.reserve(10) == 0.0
    assert limiter.reserve(10) == pytest.approx(30.0)
    clock.advance(30.0)
    assert limiter.reserve(10) == pytest.approx(30.0)


def test_tpm_limit_reserves_estimates_and_settles_actual_usage() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(tpm=600, clock=clock)  # 10 tokens per second
    assert limiter.reserve(500) == 0.0
    limiter.settle(500, 700)  # used 200 more than estimated: balance is -100
    assert limiter.reserve(100) == pytest.approx(20.0)
    limiter.settle(100, 0)  # unknown usage: no correction
    assert limiter.reserve(0) == pytest.approx(20.0)


def test_429_shrinks_the_rate_and_successes_recover_it_slowly() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=120, clock=clock, shrink=0.5, recover=0.1, floor=0.2)
    limiter.on_rate_limited()
    assert limiter.current_rpm == 60
    assert limiter.reserve(1) == pytest.approx(1.0)  # drained: wait for a refill at 1/s
    limiter.on_rate_limited()
    limiter.on_rate_limited()
    assert limiter.current_rpm == pytest.approx(24)  # floor: 20% of 120
    for _ in range(3):
        limiter.on_success()
    assert limiter.current_rpm == pytest.approx(60)  # +10% of 120 per success
    for _ in range(20):
        limiter.on_success()
    assert limiter.current_rpm == 120
    assert limiter.throttled == 3


def test_no_limits_means_no_waits() -> None:
    limiter = RateLimiter()
    assert not limiter.enabled
    limiter.on_rate_limited()
    assert [limiter.reserve(10**6) for _ in range(100)] == [0.0] * 100


def test_estimate_tokens_counts_text_parts() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 8}, {"type": "image_url"}]},
    ]
    assert estimate_tokens(messages) == 12
    assert estimate_tokens([]) == 1


def test_limiter_rejects_bad_settings() -> None:
    with pytest.raises(UsageError, match="rpm"):
        RateLimiter(rpm=0)
    with pytest.raises(UsageError, match="shrink"):
        RateLimiter(rpm=1, shrink=1.5)


# -- single-flight --------------------------------------------------------------------


def _flight_task() -> asyncio.Task[Any]:
    """The one task running besides the caller: the flight ``join`` just started."""
    [task] = asyncio.all_tasks() - {asyncio.current_task()}
    return task


async def _finished(task: asyncio.Task[Any]) -> None:
    """Wait (bounded) until ``task`` ends and the done callbacks added before ours ran."""
    done, _ = await asyncio.wait([task], timeout=5)
    assert done == {task}


def test_single_flight_shares_one_run_and_forgets_it_after() -> None:
    async def scenario() -> None:
        runs = 0
        gate = asyncio.Event()
        got: list[tuple[str, object, bool]] = []

        async def work() -> str:
            nonlocal runs
            runs += 1
            await gate.wait()
            return f"answer {runs}"

        flights: SingleFlight[str, str] = SingleFlight(
            lambda w, task, shared: got.append((w, task.result(), shared))
        )
        assert not flights.join("k", work, "a")
        first = _flight_task()
        assert flights.join("k", work, "b")
        assert flights.join("k", work, "c")
        assert "k" in flights and len(flights) == 1
        gate.set()
        await _finished(first)
        assert got == [("a", "answer 1", False), ("b", "answer 1", True), ("c", "answer 1", True)]
        assert len(flights) == 0
        assert not flights.join("k", work, "d")  # after completion: a new flight
        await _finished(_flight_task())
        assert runs == 2 and flights.shared == 2
        assert len(flights) == 0

    asyncio.run(scenario())


def test_single_flight_cancels_when_the_last_waiter_leaves() -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        notified: list[str] = []

        async def work() -> str:
            started.set()
            await asyncio.sleep(3600)
            return "never"

        flights: SingleFlight[str, str] = SingleFlight(lambda w, t, s: notified.append(w))
        flights.join("k", work, "a")
        task = _flight_task()
        flights.join("k", work, "b")
        await started.wait()
        flights.leave("k", "a")
        assert "k" in flights
        flights.leave("k", "b")
        assert "k" not in flights
        await _finished(task)
        assert task.cancelled()
        assert notified == []

    asyncio.run(scenario())


# -- the pipeline in virtual time --------------------------------------------------------


class Upstream:
    """A scripted ``send``: each attempt pops the next outcome."""

    def __init__(self, *outcomes: LMResponse | Exception) -> None:
        self.outcomes = list(outcomes)
        self.attempts = 0

    async def __call__(self, request: LMRequest, timeout: float) -> LMResponse:
        self.attempts += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _ok(text: str = "ok", prompt: int = 3, completion: int = 2) -> LMResponse:
    return LMResponse((Completion(text, "stop"),), Usage(prompt, completion), "openai/m")


REQUEST = LMRequest("openai/m", ({"role": "user", "content": "hello"},), {})


def _run_pipeline(
    upstream: Upstream,
    *,
    calls: int = 1,
    clock: VirtualClock | None = None,
    breaker: CircuitBreaker | None = None,
    limiter: RateLimiter | None = None,
    policy: RetryPolicy | None = None,
    options: CallOptions | None = None,
) -> tuple[list[tuple[object, CallInfo]], VirtualSleeper, UsageMeter, list[tuple[str, Any]]]:
    clock = clock or VirtualClock()
    sleeper = VirtualSleeper(clock)
    meter = UsageMeter("openai/m")
    events: list[tuple[str, Any]] = []
    results: list[tuple[object, CallInfo]] = []

    async def scenario() -> None:
        done = asyncio.Event()

        def deliver(waiter: int, value: object, info: CallInfo) -> None:
            results.append((value, info))
            if len(results) == calls:
                done.set()

        pipeline: Pipeline[int] = Pipeline(
            upstream,
            deliver,
            model="openai/m",
            policy=policy or RetryPolicy(3, 0.5, 8.0, rng=random.Random(1)),
            breaker=breaker or CircuitBreaker(5, 30.0, clock=clock),
            limiter=limiter or RateLimiter(clock=clock),
            sleeper=sleeper,
            meter=meter,
            timeout=5.0,
            max_in_flight=8,
            emit=lambda name, data: events.append((name, data)),
        )
        for i in range(calls):
            pipeline.start(f"key{i}", REQUEST, options or CallOptions(), i)
        await asyncio.wait_for(done.wait(), 5)
        await pipeline.close()

    asyncio.run(scenario())
    return results, sleeper, meter, events


def test_pipeline_retries_server_errors_then_succeeds() -> None:
    upstream = Upstream(ProviderError("500"), ProviderError("502"), _ok())
    results, sleeper, meter, events = _run_pipeline(upstream)
    [(value, info)] = results
    assert isinstance(value, LMResponse) and value.texts == ["ok"]
    assert info.retries == 2 and upstream.attempts == 3
    assert len(sleeper.waits) == 2
    assert 0.0 <= sleeper.waits[0] <= 0.5 and 0.0 <= sleeper.waits[1] <= 1.0
    assert [data["retry"] for name, data in events if name == "lm.request.retry"] == [1, 2]
    stats = meter.snapshot()
    assert (stats.upstream_requests, stats.retries, stats.successes) == (3, 2, 1)
    assert stats.usage == Usage(3, 2)


def test_pipeline_waits_exactly_retry_after() -> None:
    upstream = Upstream(RateLimitError("429", retry_after=7.0), _ok())
    results, sleeper, meter, events = _run_pipeline(upstream)
    assert isinstance(results[0][0], LMResponse)
    assert sleeper.waits == [7.0]
    assert events[0][1]["delay"] == 7.0 and events[0][1]["status"] == 429
    assert meter.snapshot().throttled == 1


def test_pipeline_gives_up_after_num_retries_and_reports_the_error() -> None:
    upstream = Upstream(*[ProviderError("500") for _ in range(3)])
    results, _, meter, _ = _run_pipeline(upstream, options=CallOptions(num_retries=2))
    value, info = results[0]
    assert isinstance(value, ProviderError) and info.retries == 2
    assert upstream.attempts == 3
    assert meter.snapshot().errors == {"ProviderError": 1}


def test_pipeline_stops_retrying_when_the_breaker_opens() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker(2, 30.0, clock=clock)
    upstream = Upstream(ProviderError("500"), ProviderError("500"), _ok())
    results, _, meter, _ = _run_pipeline(upstream, clock=clock, breaker=breaker)
    value, info = results[0]
    assert isinstance(value, CircuitOpenError)
    assert isinstance(value.__cause__, ProviderError)
    assert upstream.attempts == 2 and info.retries == 2
    assert meter.snapshot().circuit_rejections == 1


def test_pipeline_waits_for_the_rate_limiter_and_adapts_on_429() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=60, clock=clock)
    for _ in range(60):
        limiter.reserve(1)  # use up the minute's burst
    upstream = Upstream(RateLimitError("429", retry_after=1.0), _ok())
    results, sleeper, _, _ = _run_pipeline(upstream, clock=clock, limiter=limiter)
    assert isinstance(results[0][0], LMResponse)
    # 1 s for a token; Retry-After 1 s, during which the drained bucket, now
    # refilling at half rate (0.5/s), gains half a token; the other half: 1 s.
    assert sleeper.waits == [pytest.approx(1.0), 1.0, pytest.approx(1.0)]
    assert limiter.current_rpm == pytest.approx(60 * 0.5 + 60 * 0.02)


def test_sleeper_for_the_system_clock_is_asyncio_sleep() -> None:
    assert sleeper_for(SystemClock()) is asyncio.sleep


def test_sleeper_for_other_clocks_waits_on_the_clock() -> None:
    clock = VirtualClock()
    sleep = sleeper_for(clock)
    done = threading.Event()

    async def nap() -> None:
        await sleep(5.0)

    def run() -> None:
        asyncio.run(nap())
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert clock.wait_for_sleepers(1, 5)
    assert not done.is_set()
    clock.advance(5.0)
    assert done.wait(5)
    thread.join(5)


# -- config -------------------------------------------------------------------------------


def test_config_reads_the_settings_group_and_validates() -> None:
    from dspex.config import Settings

    settings = Settings.model_validate({"lm_client": {"num_retries": 5, "rpm": 100}})
    config = LMClientConfig.from_settings(settings.lm_client, timeout=2.0)
    assert (config.num_retries, config.rpm, config.timeout) == (5, 100, 2.0)
    assert config.call_timeout == 6 * 2.0 + 5 * 30.0 + 10.0
    assert config.replace(tpm=1000).tpm == 1000
    with pytest.raises(ConfigError, match=r"lm_client\.max_in_flight=0"):
        LMClientConfig(max_in_flight=0)
    with pytest.raises(
        ConfigError, match=r"lm_client\.transport='curl'.*'auto', 'httptools', 'h11' or 'httpx'"
    ):
        LMClientConfig(transport="curl")
    with pytest.raises(ConfigError, match=r"lm_client\.max_response_bytes=0"):
        LMClientConfig(max_response_bytes=0)
    defaults = LMClientConfig.from_settings(Settings().lm_client)
    assert defaults == LMClientConfig()  # the dataclass mirrors the settings' defaults
    with pytest.raises(ConfigError, match="backoff_max"):
        LMClientConfig(backoff_base=2.0, backoff_max=1.0)
    with pytest.raises(ConfigError, match="retries_max"):
        config.replace(retries_max=1)
