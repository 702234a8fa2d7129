"""The in-process settings holder: global configure, scoped context overrides."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dspex.errors import UsageError
from dspex.programs._settings import configure, context, current_settings, settings

pytestmark = pytest.mark.usefixtures("clean_settings")


def test_defaults() -> None:
    assert settings.lm is None
    assert settings.adapter is None
    assert settings["max_trace_size"] == 10_000
    assert current_settings()["trace"] is None


def test_configure_sets_globally_and_is_seen_by_other_threads() -> None:
    lm = object()
    configure(lm=lm, custom_key=3)
    assert settings.lm is lm
    assert settings.custom_key == 3
    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(lambda: settings.lm).result(timeout=5)
    assert seen is lm


def test_context_overrides_then_restores() -> None:
    outer, inner = object(), object()
    configure(lm=outer)
    with context(lm=inner, adapter="A"):
        assert settings.lm is inner
        assert settings.adapter == "A"
        with context(adapter="B"):
            assert settings.lm is inner  # nested contexts layer
            assert settings.adapter == "B"
        assert settings.adapter == "A"
    assert settings.lm is outer
    assert settings.adapter is None


def test_context_is_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError), context(lm="temp"):
        raise RuntimeError("boom")
    assert settings.lm is None


def test_context_is_per_thread() -> None:
    entered = threading.Event()
    release = threading.Event()
    seen: list[object] = []

    def other() -> None:
        entered.wait(5)
        seen.append(settings.lm)
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with context(lm="mine"):
        entered.set()
        assert release.wait(5)
        assert settings.lm == "mine"
    thread.join(5)
    assert seen == [None]  # the override did not leak into the other thread


def test_configure_inside_context_is_visible_for_unoverridden_keys() -> None:
    with context(adapter="A"):
        configure(lm="global")
        assert settings.lm == "global"
        assert settings.adapter == "A"


def test_unknown_setting_and_assignment_errors() -> None:
    with pytest.raises(AttributeError, match="no setting named 'nope'"):
        _ = settings.nope
    with pytest.raises(AttributeError, match=r"dspex\.configure"):
        settings.lm = "x"


def test_concurrent_configure_loses_no_keys() -> None:
    def set_key(i: int) -> None:
        configure(**{f"k{i}": i})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(set_key, range(200)))
    current = current_settings()
    assert all(current[f"k{i}"] == i for i in range(200))


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"temperature": 3.5}, "temperature=3.5"),
        ({"temperature": -0.1}, "temperature=-0.1"),
        ({"temperature": "hot"}, "temperature='hot'"),
        ({"temperature": True}, "temperature=True"),
        ({"max_tokens": 0}, "max_tokens=0"),
        ({"max_tokens": 12.5}, "max_tokens=12.5"),
    ],
)
def test_context_refuses_request_params_a_provider_would_reject(
    overrides: dict[str, object], named: str
) -> None:
    from dspex.errors import UsageError

    with pytest.raises(UsageError, match=named), context(**overrides):
        pass
    assert settings.get("temperature") is None  # nothing was applied


def test_context_accepts_valid_request_params_and_none() -> None:
    with context(temperature=0, max_tokens=1), context(temperature=2.0, max_tokens=None):
        assert (settings.get("temperature"), settings.get("max_tokens")) == (2.0, None)


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda: configure(num_threads=-2), r"dspex\.configure\(num_threads=-2\)"),
        (lambda: context(num_threads=0).__enter__(), r"dspex\.context\(num_threads=0\)"),
        (lambda: configure(num_threads="8"), r"dspex\.configure\(num_threads='8'\)"),
        (lambda: configure(max_errors=-1), r"dspex\.configure\(max_errors=-1\)"),
    ],
)
def test_bad_thread_and_error_counts_are_refused_when_set(call: Any, where: str) -> None:
    with pytest.raises(UsageError, match=where + r": must be a"):
        call()
    assert settings.num_threads == 8 and settings.max_errors == 10  # nothing was applied


def test_start_refuses_a_bad_num_threads_before_starting_anything() -> None:
    import dspex
    from dspex.actors._runtime_registry import active_runtimes

    before = list(active_runtimes())
    with pytest.raises(UsageError, match=r"dspex\.start\(num_threads=-1\): must be an int >= 1"):
        dspex.start(num_threads=-1)
    assert active_runtimes() == before


def test_evaluate_refuses_a_bad_num_threads_at_construction() -> None:
    from dspex.programs import Evaluate

    with pytest.raises(UsageError, match=r"Evaluate\(num_threads=-4\): must be an int >= 1"):
        Evaluate(devset=[], metric=lambda example, prediction: 1.0, num_threads=-4)
