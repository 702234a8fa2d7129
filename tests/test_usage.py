"""Usage tracking: ``track_usage``, the LM-call hook ``note_usage`` and ``call_tracked``."""

from __future__ import annotations

from typing import Any

import dspex
from dspex.actors._lm._types import Completion, LMResponse, Usage
from dspex.programs import Module, Parallel, Prediction
from dspex.programs._usage import (
    UsageTracker,
    call_tracked,
    current_usage_tracker,
    note_usage,
    track_usage,
)


class FakeLM:
    def __init__(self, model: str) -> None:
        self.model = model


def _response(prompt: int, completion: int, cache_hit: bool = False) -> LMResponse:
    return LMResponse((Completion("x"),), Usage(prompt, completion), "m", cache_hit)


def test_calls_add_up_per_model_and_cache_hits_are_free() -> None:
    gpt, claude = FakeLM("openai/gpt-4o-mini"), FakeLM("anthropic/claude")
    note_usage(gpt, _response(1, 1))  # no tracker active: ignored
    with track_usage() as tracker:
        assert current_usage_tracker() is tracker
        note_usage(gpt, _response(10, 2))
        note_usage(gpt, _response(5, 3))
        note_usage(claude, _response(7, 0))
        note_usage(gpt, _response(100, 100, cache_hit=True))
        note_usage(gpt, _response(0, 0))
    assert current_usage_tracker() is None
    assert tracker.get_total_tokens() == {
        "openai/gpt-4o-mini": {"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20},
        "anthropic/claude": {"prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7},
    }


def test_a_nested_tracker_rolls_up_into_its_parent() -> None:
    lm = FakeLM("m")
    with track_usage() as outer:
        note_usage(lm, _response(1, 1))
        with track_usage() as inner:
            note_usage(lm, _response(2, 2))
        assert inner.get_total_tokens() == {
            "m": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}
        }
        assert current_usage_tracker() is outer
    assert outer.get_total_tokens()["m"]["total_tokens"] == 6


def test_entries_merge_nested_counts_and_keep_non_numbers() -> None:
    tracker = UsageTracker()
    tracker.add_usage(
        "m", {"prompt_tokens": 1, "details": {"cached": 1}, "tier": "a", "byok": True}
    )
    tracker.add_usage(
        "m", {"prompt_tokens": 2, "details": {"cached": 4}, "tier": "b", "byok": True}
    )
    tracker.add_usage("m", {})
    assert tracker.get_total_tokens() == {
        "m": {"prompt_tokens": 3, "details": {"cached": 5}, "tier": "a", "byok": True}
    }


def test_the_tracker_reaches_parallel_workers() -> None:
    lm = FakeLM("m")

    class Spends(Module):
        def forward(self, n: int) -> int:
            note_usage(lm, _response(n, 1))
            return n

    with track_usage() as tracker:
        assert Parallel(num_threads=3)([(Spends(), {"n": n}) for n in (1, 2, 3)]) == [1, 2, 3]
    assert tracker.get_total_tokens()["m"] == {
        "prompt_tokens": 6,
        "completion_tokens": 3,
        "total_tokens": 9,
    }


def test_call_tracked_attaches_the_totals_to_the_prediction() -> None:
    lm = FakeLM("m")

    def call() -> Prediction:
        note_usage(lm, _response(3, 4))
        return Prediction(answer="x")

    pred = call_tracked(call)
    assert pred.get_lm_usage() == {
        "m": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    }
    first: Any = call_tracked(lambda: (call(), ["trace"]))
    assert first[0].get_lm_usage()["m"]["total_tokens"] == 7
    assert call_tracked(lambda: 5) == 5  # not a prediction: returned as is


def test_predictions_carry_usage_when_the_setting_is_on(start_runtime: Any) -> None:
    # End to end: a real LM over the loopback fake, which reports token usage.
    from runtime_helpers import SECRET, echo_answers, make_lm

    from dspex.testing import FakeOpenAI

    start_runtime()
    with FakeOpenAI(api_key=SECRET) as fake:
        echo_answers(fake)
        lm = make_lm(fake, cache=False)
        predict = dspex.Predict("question -> answer")
        with dspex.context(lm=lm, track_usage=True):
            prediction = predict(question="how many tokens?")
        usage = prediction.get_lm_usage()
        assert set(usage) == {lm.model}
        assert usage[lm.model]["prompt_tokens"] > 0 and usage[lm.model]["completion_tokens"] > 0
        with dspex.context(lm=lm):  # the setting is off by default
            assert not predict(question="again?").get_lm_usage()
        with dspex.track_usage() as tracker, dspex.context(lm=lm):
            predict(question="one")
            predict(question="two")
        total = tracker.get_total_tokens()[lm.model]
        assert total["total_tokens"] == total["prompt_tokens"] + total["completion_tokens"] > 0
        assert fake.request_count == 4
