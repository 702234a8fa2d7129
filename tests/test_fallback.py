"""Provider fallback end to end: ``dspex.LM(..., fallbacks=[...])`` against two
fake providers on 127.0.0.1, the primary failing on command."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers

import dspex
from dspex.errors import AuthenticationError, LMError, LMTimeoutError, UsageError
from dspex.supervision import VirtualClock
from dspex.testing import FakeAnthropic, FakeOpenAI, Fault

PRIMARY = "openai/gpt-primary"
BACKUP = "anthropic/claude-backup"


class Failing:
    """A switch: while set, the primary answers ``fault`` to every request."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.on = threading.Event()

    def __call__(self, index: int) -> Fault | None:
        return self.fault if self.on.is_set() else None


def next_fails(server: FakeOpenAI, fault: Fault) -> None:
    """Script ``server`` so that its next request (only) gets ``fault``."""
    at = server.request_count
    server.schedule = lambda i: fault if i == at else None


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with FakeOpenAI(api_key=SECRET) as primary, FakeAnthropic(api_key=SECRET) as backup:
        echo_answers(primary, prefix="P:")
        echo_answers(backup, prefix="B:")
        yield primary, backup


def _lms(servers: tuple[FakeOpenAI, FakeAnthropic], **kwargs: Any) -> dspex.LM:
    primary, backup = servers
    return dspex.LM(
        PRIMARY,
        api_base=primary.url,
        api_key=SECRET,
        fallbacks=[dspex.LM(BACKUP, api_base=backup.url, api_key=SECRET)],
        **kwargs,
    )


def test_open_breaker_sends_calls_to_the_fallback_and_they_return_when_it_closes(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    clock = VirtualClock()
    rt = start_runtime(
        clock=clock,
        lm_client={"num_retries": 0, "breaker_failure_threshold": 2, "breaker_reset_timeout": 30},
    )
    failing = Failing(Fault.error(503))
    primary.schedule = failing
    lm = _lms(servers, cache=False)
    assert lm("one") == [chat_answer("P:one")]
    failing.on.set()
    # Two 503s open the primary's breaker; each call is answered by the backup.
    assert lm("two") == [chat_answer("B:two")]
    assert lm("three") == [chat_answer("B:three")]
    assert primary.request_count == 3
    # Open: the primary is not even asked.
    assert lm("four") == [chat_answer("B:four")]
    assert primary.request_count == 3 and backup.request_count == 3
    failing.on.clear()
    clock.advance(30.0)  # half-open: the next call is the primary's probe
    assert lm("five") == [chat_answer("P:five")]
    assert lm("six") == [chat_answer("P:six")]
    assert backup.request_count == 3 and primary.request_count == 5
    metrics = rt.metrics()["models"]
    assert metrics[PRIMARY]["fallbacks"] == 3
    assert metrics[BACKUP]["requests"] == 3
    answered = [(entry["model"], entry["outputs"]) for entry in lm.history]
    assert answered == [(PRIMARY, [chat_answer(f"P:{q}")]) for q in ("one", "five", "six")]
    backup_lm = lm.fallbacks[0]
    assert [e["outputs"][0] for e in backup_lm.history] == [
        chat_answer(f"B:{q}") for q in ("two", "three", "four")
    ]


def test_no_call_is_lost_or_answered_twice_during_a_switch(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(
        lm_client={
            "num_retries": 1,
            "backoff_base": 0.001,
            "backoff_max": 0.001,
            "breaker_failure_threshold": 3,
            "breaker_reset_timeout": 60,
        },
    )
    failing = Failing(Fault.error(500))
    primary.schedule = failing
    lm = _lms(servers, cache=False)
    questions = [f"q{i}" for i in range(60)]

    def ask(q: str) -> list[str]:
        if q == "q20":
            failing.on.set()  # the primary starts failing mid-stream
        return lm(q)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, questions))
    for q, answer in zip(questions, answers, strict=True):
        assert answer in ([chat_answer(f"P:{q}")], [chat_answer(f"B:{q}")])
    answered_by_primary = primary.outcomes.get("ok", 0)
    answered_by_backup = backup.outcomes.get("ok", 0)
    assert answered_by_primary + answered_by_backup == len(questions)
    assert answered_by_backup >= 1 and backup.request_count == answered_by_backup


def test_429_beyond_the_retry_budget_falls_back_and_a_bad_request_does_not(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(lm_client={"num_retries": 1, "backoff_base": 0.001, "backoff_max": 0.001})
    lm = _lms(servers, cache=False)
    primary.schedule = [Fault.rate_limit(None), Fault.rate_limit(None)]
    assert lm("throttled") == [chat_answer("B:throttled")]
    assert primary.request_count == 2  # the first try and its one retry
    next_fails(primary, Fault.unauthorized())
    with pytest.raises(AuthenticationError):
        lm("bad key")
    next_fails(primary, Fault.error(400))
    with pytest.raises(LMError, match="HTTP 400"):
        lm("bad request")
    assert backup.request_count == 1


def test_a_timeout_falls_back_only_when_configured(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(lm_client={"num_retries": 0, "timeout": 0.3})
    primary.schedule = lambda i: Fault.timeout()
    with pytest.raises(LMTimeoutError):
        _lms(servers, cache=False)("slow")
    assert backup.request_count == 0
    assert _lms(servers, cache=False, fallback_on_timeout=True)("slow") == [chat_answer("B:slow")]


def test_each_call_is_cached_under_the_model_that_answered(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(lm_client={"num_retries": 0})
    lm = _lms(servers)
    primary.schedule = [Fault.error(502)]
    first = lm.forward("cached?")
    assert first.answered_by == BACKUP and not first.cache_hit
    # The primary is healthy again: the answer cached under the backup is not its answer.
    second = lm.forward("cached?")
    assert second.answered_by == PRIMARY and second.texts == [chat_answer("P:cached?")]
    next_fails(primary, Fault.error(502))
    third = lm.forward("cached?")  # the primary's cache now has it: no upstream call
    assert third.cache_hit and third.answered_by == PRIMARY
    assert backup.request_count == 1 and primary.request_count == 2


def test_fallbacks_from_the_settings_models_table(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(
        lm_client={"num_retries": 0},
        models={
            PRIMARY: {"api_base": primary.url, "api_key": SECRET, "fallbacks": [BACKUP]},
            BACKUP: {"api_base": backup.url, "api_key": SECRET},
        },
    )
    primary.schedule = [Fault.drop()]
    answer = dspex.LM(PRIMARY, cache=False)("from settings")
    assert answer == [chat_answer("B:from settings")]


def test_bad_fallbacks_are_refused_naming_the_fix() -> None:
    with pytest.raises(UsageError, match="fallbacks"):
        dspex.LM(PRIMARY, fallbacks="anthropic/claude")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="fallbacks"):
        dspex.LM(PRIMARY, fallbacks=[42])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="model"):
        dspex.LM(PRIMARY, fallbacks=["no-provider"])


def test_copy_and_state_keep_the_fallbacks() -> None:
    lm = dspex.LM(PRIMARY, fallbacks=[BACKUP], fallback_on_timeout=True)
    assert lm.dump_state()["fallbacks"] == [BACKUP]
    copy = lm.copy(temperature=0.5)
    assert [f.model for f in copy.fallbacks] == [BACKUP] and copy.fallback_on_timeout is True


def test_an_awaited_call_falls_back_and_is_priced_and_tagged(
    start_runtime: StartRuntime, servers: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    primary, backup = servers
    start_runtime(lm_client={"num_retries": 0})
    lm = _lms(servers, cache=False)
    next_fails(primary, Fault.error(503))
    messages = [{"role": "user", "content": "awaited"}]
    response = asyncio.run(lm.agenerate(messages, {}))
    assert response.answered_by == BACKUP and response.texts == [chat_answer("B:awaited")]
    again = asyncio.run(lm.agenerate(messages, {}))
    assert again.answered_by == PRIMARY and again.texts == [chat_answer("P:awaited")]
    assert backup.request_count == 1 and primary.request_count == 2
