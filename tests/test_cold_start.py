"""A fresh process's first call loads only what it needs (issue 11's cold start).

Each test runs a child interpreter (a fresh ``sys.modules``) that makes the
DSPy-style first call against a fake OpenAI server and reports which modules
it loaded, and which thread loaded genai-prices. No wall-clock asserts: the
timing itself is ``bench/cold_start.py``'s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspex.testing import FakeOpenAI

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, threading

importers = {}

class Watch:
    # records which thread first imports a watched module (finds nothing itself)
    def find_spec(self, name, path=None, target=None):
        if name in ("genai_prices", "xml.etree.ElementTree") and name not in importers:
            importers[name] = threading.current_thread().name
        return None

sys.meta_path.insert(0, Watch())
import dspex as dspy

after_import = sorted(sys.modules)
dspy.configure(lm=dspy.LM("openai/test-model", api_base=sys.argv[1], api_key="sk-test"))
answer = dspy.Predict("question -> answer")(question="cold?").answer
dspy.current_runtime().flush()  # telemetry has handled the call's events (prices none)
after_call = sorted(sys.modules)
cost = dspy.current_runtime().history(1)[0].cost  # read: the price loads now at the latest

import typing
costly = []  # record classes whose definition compiled every annotation (see test below)
for name, module in list(sys.modules.items()):
    if name.startswith("dspex") and name in after_call:
        for value in list(vars(module).values()):
            if not isinstance(value, type) or value.__module__ != name:
                continue
            notes = getattr(value, "__annotations__", {})
            if issubclass(value, tuple) and any(
                isinstance(a, typing.ForwardRef) for a in notes.values()
            ):
                costly.append(f"{name}.{value.__qualname__}")
print(json.dumps({
    "costly": sorted(costly),
    "answer": answer,
    "after_import": after_import,
    "after_call": after_call,
    "importers": importers,
    "cost_read": cost is None or isinstance(cost, float),
}))
"""

# Never needed by a first Predict call (optional extras and other features).
NOT_ON_FIRST_CALL = (
    # Plain settings skip the pydantic schema (docs/architecture.md, departure 30);
    # the price table loads when a cost is read (cost_read below reads it after).
    "pydantic",
    "pydantic_core",
    "dspex.config._settings",
    "genai_prices",
    "httpx2",
    "importlib.metadata",
    # Only the provider a model id names loads.
    "dspex.actors._lm._providers._anthropic",
    "dspex.actors._lm._providers._gemini",
    "dspex.actors._lm._providers._responses",
    "dspex.actors._lm._providers._embeddings",
    "pydantic_settings",
    "starlette",
    "uvicorn",
    "optuna",
    "gepa",
    "opentelemetry",
    "numpy",
    "httpx",
    "xml.etree.ElementTree",
    "difflib",
    "dspex.programs._evaluate",
    "dspex.programs._react",
    "dspex.programs._stream_serve",
    "dspex.supervision._pool",
    "dspex.actors._lm._transport_httpx",
    # Client stats load when first read (LMHandle.stats(), Runtime.stats()).
    "dspex.actors._lm._resilience._stats",
    # The body reader loads zlib for the first compressed body only.
    "zlib",
    # configure registers the Ray backend by name; its modules load when used.
    "dspex.programs._ray",
    # Module.save/load load the state-file module when called.
    "dspex.programs._state_files",
    # JSON schemas (JSONAdapter, typed output fields) load when first built.
    "dspex.programs._adapters._schema",
)


def reply(body: dict[str, object]) -> str:
    return "[[ ## answer ## ]]\nwarm\n\n[[ ## completed ## ]]"


@pytest.fixture(scope="module")
def first_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    scratch = tmp_path_factory.mktemp("cold")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_PROXY", "_proxy"))}
    env["PYTHONPATH"] = str(ROOT)
    env["DSPEX_CACHE__DIR"] = str(scratch / "cache")
    with FakeOpenAI(reply=reply) as server:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, server.url],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    yield json.loads(out.stdout.strip().splitlines()[-1])


def test_the_first_call_answers(first_call: dict[str, object]) -> None:
    assert first_call["answer"] == "warm"
    assert first_call["cost_read"] is True


@pytest.mark.parametrize("module", NOT_ON_FIRST_CALL)
def test_the_first_call_does_not_load(first_call: dict[str, object], module: str) -> None:
    loaded = first_call["after_call"]
    assert isinstance(loaded, list)
    assert module not in loaded


def test_import_dspex_loads_no_programs_runtime_or_config(first_call: dict[str, object]) -> None:
    loaded = first_call["after_import"]
    assert isinstance(loaded, list)
    heavy = ("pydantic", "asyncio", "genai_prices", "dspex.programs._predict", "dspex.config")
    assert [m for m in heavy if m in loaded] == []


def test_the_first_call_defines_no_typing_namedtuple(first_call: dict[str, object]) -> None:
    # typing.NamedTuple compiles each string annotation into a ForwardRef (~0.1 ms a
    # class on a cold start); the records the first call defines are dspex._record
    # Records, built by collections.namedtuple (tests/test_records.py).
    assert first_call["costly"] == []


def test_the_caller_never_waits_for_the_price_table(first_call: dict[str, object]) -> None:
    # genai-prices loads when a first answer's cost is first read: here by the
    # Telemetry actor (or the reading main thread), never by the run that made the call.
    importers = first_call["importers"]
    assert isinstance(importers, dict)
    thread = importers.get("genai_prices")
    assert thread is None or thread == "MainThread" or thread.startswith("Telemetry"), thread


# -- the pieces, in process ---------------------------------------------------------------------


def test_an_unpriced_answer_is_priced_once_when_its_cost_is_read() -> None:
    import pickle

    from dspex.actors._lm._prices import Price, PricedLater, PriceTable, replace_response
    from dspex.actors._lm._types import Completion, LMResponse, Usage

    lookups: list[str] = []

    def lookup(model: str) -> Price:
        lookups.append(model)
        return Price(1.0, 2.0)

    table = PriceTable(lookup=lookup)
    usage = Usage(prompt_tokens=1000, completion_tokens=500)
    plain = LMResponse((Completion("hi"),), usage, model="m", answered_by="openai/m")
    later = PricedLater.of(plain, lambda: table.cost("openai/m", usage))
    hit = replace_response(later, cache_hit=True)  # the cache's copy stays unpriced
    assert lookups == [] and not table.known("openai/m")
    assert later.cost == pytest.approx(0.002)
    assert hit.cost == pytest.approx(0.002)
    assert lookups == ["openai/m"] and table.known("openai/m")
    priced = LMResponse((Completion("hi"),), usage, "m", cost=later.cost, answered_by="openai/m")
    assert later == priced and priced == later and hash(later) == hash(priced)
    assert repr(later) == repr(priced)
    copied = pickle.loads(pickle.dumps(later))
    assert type(copied) is LMResponse and copied == priced


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"cache": {"dir": "/tmp/x"}},
        {"cache": {"enabled": False}, "telemetry": {"format": "off"}},
        {"runtime": {"max_runs": 3}, "lm": "openai/gpt-4o-mini"},  # a root key: full path
    ],
)
def test_settings_built_section_by_section_equal_full_validation(data: dict[str, object]) -> None:
    from dspex.config._values import Settings, build_settings

    fast, full = build_settings(data), Settings(**data)
    assert fast == full
    assert fast.model_fields_set == full.model_fields_set
    for name in ("lm_client", "cache", "telemetry", "runtime", "budget"):
        assert getattr(fast, name) == getattr(full, name)
        assert getattr(fast, name).model_fields_set == getattr(full, name).model_fields_set


def test_a_bad_section_value_names_its_full_key() -> None:
    from dspex.config._values import Settings, build_settings
    from dspex.errors import ConfigError

    with pytest.raises(ConfigError) as fast:
        build_settings({"cache": {"memory_max_entries": "lots"}})
    with pytest.raises(ConfigError) as full:
        Settings(cache={"memory_max_entries": "lots"})
    assert str(fast.value) == str(full.value)
    assert "cache.memory_max_entries" in str(fast.value)


def test_a_first_answer_is_priced_by_telemetry_which_survives_a_broken_table(
    start_runtime: Any,
) -> None:
    import dspex
    from dspex.actors._lm._prices import PriceTable

    lookups: list[str] = []

    def broken(model: str) -> Any:
        lookups.append(model)
        raise RuntimeError("the price table is broken")

    rt = start_runtime()
    rt.prices = PriceTable(rt._own_prices, lookup=broken)  # before any handle exists
    with FakeOpenAI(reply=reply, api_key="sk-test") as server:
        lm = dspex.LM("openai/test-model", api_base=server.url, api_key="sk-test", cache=False)
        qa = dspex.Predict("question -> answer")
        assert qa(question="one?", lm=lm).answer == "warm"
        metrics = rt.metrics()  # flushes telemetry: the actor priced the answer (and failed)
        assert lookups == ["openai/test-model"]
        model = metrics["models"]["openai/test-model"]
        assert model["requests"] == 1 and model["cost_usd"] is None
        assert qa(question="two?", lm=lm).answer == "warm"  # telemetry still counts
        assert rt.metrics()["models"]["openai/test-model"]["requests"] == 2


def test_telemetry_prices_a_first_answer_only_when_its_cost_is_read(start_runtime: Any) -> None:
    import dspex
    from dspex.actors._lm._prices import Price, PriceTable

    lookups: list[str] = []

    def lookup(model: str) -> Price:
        lookups.append(model)
        return Price(1.0, 2.0)

    rt = start_runtime()
    rt.prices = PriceTable(rt._own_prices, lookup=lookup)  # before any handle exists
    with FakeOpenAI(reply=reply, api_key="sk-test") as server:
        lm = dspex.LM("openai/test-model", api_base=server.url, api_key="sk-test", cache=False)
        assert dspex.Predict("question -> answer")(question="one?", lm=lm).answer == "warm"
        rt.flush()  # telemetry has handled the call's events
        assert lookups == []  # the price table is not loaded for a cost nobody read
        model = rt.metrics()["models"]["openai/test-model"]
        assert lookups == ["openai/test-model"]
        assert model["requests"] == 1 and model["unpriced_calls"] == 0
        assert model["cost_usd"] is not None and model["cost_usd"] > 0
        assert rt.history(1)[0].cost == pytest.approx(model["cost_usd"])
