"""The response cache through the runtime: keys per endpoint, persistence across
a Runtime restart, the unusable-directory fallback and ``configure_cache``."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers, make_lm

import dspex
from dspex.actors import current_run
from dspex.errors import ConfigError
from dspex.testing import FakeOpenAI


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


def test_the_same_request_to_two_endpoints_never_collides(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    with FakeOpenAI(api_key=SECRET) as other:
        echo_answers(fake, prefix="first:")
        echo_answers(other, prefix="second:")
        qa = dspex.Predict("question -> answer")
        lm1, lm2 = make_lm(fake), make_lm(other)  # same model name, same request
        for _ in range(2):  # the second round is answered from the cache
            assert qa(question="same", lm=lm1).answer == "first:same"
            assert qa(question="same", lm=lm2).answer == "second:same"
        assert (fake.request_count, other.request_count) == (1, 1)
    cache = rt.metrics()["cache"]
    assert cache["hits"] == 2 and cache["memory_entries"] == 2


def test_answers_persist_across_a_runtime_restart(
    start_runtime: StartRuntime, fake: FakeOpenAI, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "persistent"
    lm = make_lm(fake)
    qa = dspex.Predict("question -> answer")
    first = start_runtime(cache={"dir": cache_dir})
    assert qa(question="remember me", lm=lm).answer == "remember me"
    first.stop()
    assert fake.request_count == 1

    second = start_runtime(cache={"dir": cache_dir})
    assert qa(question="remember me", lm=lm).answer == "remember me"
    assert lm.forward("remember me too").cache_hit is False
    assert fake.request_count == 2  # only the new prompt went upstream
    cache = second.metrics()["cache"]
    assert cache["disk_hits"] == 1 and cache["disk_enabled"]
    model = second.metrics()["models"]["openai/test-model"]
    assert model["cache_hits"] == 1


def test_an_unusable_cache_directory_falls_back_to_memory_with_one_warning(
    start_runtime: StartRuntime,
    fake: FakeOpenAI,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="dspex.cache")
    rt = start_runtime(cache={"dir": blocker / "cache"})  # mkdir fails even as root
    lm = make_lm(fake)
    for _ in range(3):
        assert lm("cached in memory") == [chat_answer("cached in memory")]
    assert fake.request_count == 1
    warnings = [r for r in caplog.records if r.name == "dspex.cache" and r.levelno >= 30]
    assert len(warnings) == 1
    assert str(blocker / "cache") in warnings[0].getMessage()
    cache = rt.metrics()["cache"]
    assert cache["disk_enabled"] is False and cache["hits"] >= 2
    assert not (blocker / "cache").exists()


def test_configure_cache_is_dspy_compatible(start_runtime: StartRuntime, fake: FakeOpenAI) -> None:
    rt = start_runtime()
    lm = make_lm(fake)
    lm("before")
    settings = dspex.configure_cache(enable_disk_cache=False, memory_max_entries=10)
    assert settings["disk_enabled"] is False and settings["memory_max_entries"] == 10
    assert rt.metrics()["cache"]["disk_enabled"] is False
    lm("after")
    lm("after")
    assert fake.request_count == 2  # the new memory tier still caches
    dspex.configure(cache={"enabled": False})  # switches caching off for live LMs too
    lm("after")
    assert fake.request_count == 3
    with pytest.raises(ConfigError) as bad:
        dspex.configure_cache(memory_max_entries=0)
    assert bad.value.key == "cache.memory_max_entries"
    with pytest.raises(ConfigError):
        dspex.configure_cache(enable_litellm_cache=True)


def test_a_top_level_call_runs_in_the_calling_thread_hit_or_miss(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime()
    seen: list[tuple[threading.Thread, Any]] = []

    class Mine(dspex.Predict):
        def forward(self, **kwargs: Any) -> Any:
            seen.append((threading.current_thread(), current_run()))
            return super().forward(**kwargs)

    qa = Mine("question -> answer")
    qa.lm = make_lm(fake)
    assert qa(question="twice").answer == "twice"  # a miss: one upstream call
    assert qa(question="twice").answer == "twice"  # a hit
    assert fake.request_count == 1
    # Each call ran once (no probe repeats it), as a run, in this thread.
    assert [thread for thread, _ in seen] == [threading.current_thread()] * 2
    assert all(run is not None and run.label == "Mine" for _, run in seen)
    assert seen[0][1] is not seen[1][1]
    runs = rt.metrics()["runs"]
    assert (runs["started"], runs["succeeded"], runs["failed"]) == (2, 2, 0)
    cache = rt.metrics()["cache"]
    assert (cache["hits"], cache["misses"]) == (1, 1)
