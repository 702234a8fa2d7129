"""The LM handle's hand-built copies of a response equal ``dataclasses.replace``'s."""

from __future__ import annotations

import dataclasses

from dspex.actors._lm._handle import _as_hit, _tagged
from dspex.actors._lm._prices import PricedLater
from dspex.actors._lm._types import Completion, LMResponse, Usage


def _response() -> LMResponse:
    return LMResponse((Completion("hi", "stop"),), Usage(3, 1), "gpt-x", False, 0.5, "", ((1.0,),))


def test_a_tagged_response_is_what_replace_builds() -> None:
    response = _response()
    tagged = _tagged(response, False, 0.25, "openai/x")
    assert tagged == dataclasses.replace(
        response, cache_hit=False, cost=0.25, answered_by="openai/x"
    )
    hit = _as_hit(response, "openai/x")
    assert hit == dataclasses.replace(response, cache_hit=True, cost=0.0, answered_by="openai/x")
    # Every field is carried: a field added to LMResponse must be added to _tagged too.
    assert [f.name for f in dataclasses.fields(LMResponse)] == [
        "completions",
        "usage",
        "model",
        "cache_hit",
        "cost",
        "answered_by",
        "embeddings",
    ]


def test_a_subclass_keeps_its_type() -> None:
    later = PricedLater.of(_response(), lambda: 1.5)
    hit = _as_hit(later, "openai/x")
    assert type(hit) is PricedLater and hit.cache_hit and hit.answered_by == "openai/x"
