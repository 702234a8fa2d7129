"""Cost accounting and budgets: prices from genai-prices or the settings,
unknown as None, cost in history/metrics/track_usage, budgets that stop new
calls (fake providers on 127.0.0.1)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price
from runtime_helpers import SECRET, StartRuntime, chat_answer

import dspex
from dspex.actors._lm._budget import Budget, budget_scope
from dspex.actors._lm._prices import Price, PriceTable, package_price
from dspex.actors._lm._types import Usage
from dspex.errors import BudgetExceededError, UsageError
from dspex.testing import FakeOpenAI, Reply

KNOWN = "openai/gpt-4o-mini"  # in genai-prices' table
UNKNOWN = "openai/test-model"  # in nobody's


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=SECRET) as server:
        server.reply = lambda body: Reply(text="ok", prompt_tokens=1000, completion_tokens=500)
        yield server


def _lm(fake: FakeOpenAI, model: str = KNOWN, **kwargs: Any) -> dspex.LM:
    return dspex.LM(model, api_base=fake.url, api_key=SECRET, **kwargs)


def _expected(model: str, prompt: int, completion: int) -> float:
    name = model.split("/", 1)[1]
    price = calc_price(
        PriceUsage(input_tokens=prompt, output_tokens=completion), name, provider_id="openai"
    )
    return float(price.total_price)


# -- prices ---------------------------------------------------------------------------------


def test_prices_come_from_genai_prices_the_settings_or_are_unknown() -> None:
    price = package_price(KNOWN)
    assert price is not None and price.input_per_mtok > 0 and price.output_per_mtok > 0
    assert package_price(UNKNOWN) is None
    assert package_price("gemini/gemini-1.5-flash") is not None
    table = PriceTable(lambda: {UNKNOWN: Price(2.0, 8.0)})
    assert table.cost(UNKNOWN, Usage(1_000_000, 500_000)) == pytest.approx(6.0)
    assert table.price("local/smollm2") == Price(0.0, 0.0)  # the local model is free
    assert PriceTable(lookup=lambda model: None).cost(KNOWN, Usage(10, 10)) is None


def test_each_call_is_priced_in_history_metrics_and_track_usage(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime(models={"openai/priced-by-me": {"price": {"input": 1.0, "output": 2.0}}})
    known, unknown, own = _lm(fake), _lm(fake, UNKNOWN), _lm(fake, "openai/priced-by-me")
    fake.reply = lambda body: Reply(
        text=chat_answer("ok"), prompt_tokens=1000, completion_tokens=500
    )
    qa = dspex.Predict("question -> answer")
    with dspex.track_usage() as tracker:
        for lm in (known, unknown, own, known):  # the second call of ``known`` is a cache hit
            qa(question="q", lm=lm)
    expected = _expected(KNOWN, 1000, 500)
    assert [e["cost"] for e in known.history] == [pytest.approx(expected), 0.0]
    assert [e["cost"] for e in unknown.history] == [None]
    assert [e["cost"] for e in own.history] == [pytest.approx(0.002)]
    models = rt.metrics()["models"]
    assert models[KNOWN]["cost_usd"] == pytest.approx(expected)
    assert models[UNKNOWN]["cost_usd"] is None and models[UNKNOWN]["unpriced_calls"] == 1
    totals = tracker.get_total_tokens()
    assert totals[KNOWN]["cost"] == pytest.approx(expected)
    assert "cost" not in totals[UNKNOWN]  # unknown, not zero
    assert totals["openai/priced-by-me"]["cost"] == pytest.approx(0.002)


# -- budgets ----------------------------------------------------------------------------------


def test_a_runtime_token_budget_stops_new_calls(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    rt = start_runtime(budget={"max_tokens": 3000})
    lm = _lm(fake, UNKNOWN, cache=False)
    lm("1")
    lm("2")  # 3000 tokens spent: the limit is reached
    with pytest.raises(BudgetExceededError) as caught:
        lm("3")
    assert caught.value.budget == "max_tokens" and caught.value.scope == "runtime"
    assert fake.request_count == 2
    assert rt.metrics()["budget"]["stopped_by"] == "max_tokens"


def test_a_cost_budget_in_scope_and_unknown_prices(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = _lm(fake, cache=False)
    one_call = _expected(KNOWN, 1000, 500)
    with budget_scope(Budget(max_cost_usd=one_call * 2.5, scope="Evaluate")) as budget:
        for i in range(3):
            lm(f"q{i}")
        with pytest.raises(BudgetExceededError, match="Evaluate budget max_cost_usd"):
            lm("q3")
    assert budget.cost_usd == pytest.approx(one_call * 3)  # overshot by the one last call
    assert fake.request_count == 3
    lm("outside the scope")  # the budget ended with its block
    with budget_scope(Budget(max_cost_usd=1.0)), pytest.raises(UsageError, match="no known price"):
        _lm(fake, UNKNOWN, cache=False)("unpriceable")
    assert fake.request_count == 4


def test_concurrent_calls_overshoot_by_at_most_those_in_flight(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    lm = _lm(fake, UNKNOWN, cache=False)
    threads = 6
    budget = Budget(max_tokens=10 * 1500, scope="batch")
    refused = []

    def call(i: int) -> None:
        with budget_scope(budget):
            try:
                lm(f"q{i}")
            except BudgetExceededError:
                refused.append(i)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(60)))
    assert 10 <= fake.request_count <= 10 + threads - 1
    assert budget.tokens == fake.request_count * 1500
    assert len(refused) == 60 - fake.request_count


def test_budget_arguments_are_checked() -> None:
    with pytest.raises(UsageError, match="max_cost_usd=-1"):
        Budget(max_cost_usd=-1)
    with pytest.raises(UsageError, match="max_tokens=0"):
        Budget(max_tokens=0)


def test_cost_reaches_the_prometheus_endpoint(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    pytest.importorskip("prometheus_client")
    from dspex.serve._metrics import RuntimeCollector

    rt = start_runtime(budget={"max_tokens": 10**9})
    _lm(fake)("priced")
    _lm(fake, UNKNOWN)("unpriced")
    families = {f.name: f for f in RuntimeCollector(rt).collect()}
    cost = {s.labels["model"]: s.value for s in families["dspex_lm_cost_usd"].samples}
    assert cost == {KNOWN: pytest.approx(_expected(KNOWN, 1000, 500))}  # no sample: unknown
    spent = {s.labels["unit"]: s.value for s in families["dspex_budget_spent"].samples}
    assert spent["tokens"] == 3000


def test_a_compile_budget_stops_new_calls_and_reports_the_spend(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    fake.reply = lambda body: Reply(
        text=chat_answer("ok"), prompt_tokens=1000, completion_tokens=500
    )
    dspex.configure(lm=_lm(fake, UNKNOWN))
    trainset = [
        dspex.Example(question=f"q{i}", answer="ok").with_inputs("question") for i in range(20)
    ]
    optimizer = dspex.BootstrapFewShot(
        metric=lambda ex, pred, trace=None: True, max_bootstrapped_demos=20, max_rounds=1
    )
    compiled = optimizer.compile(
        dspex.Predict("question -> answer"), trainset=trainset, max_tokens=3 * 1500
    )
    assert compiled is not None
    report = optimizer.compile_cost
    assert report is not None and report["stopped_by"] == "max_tokens"
    assert 3 <= fake.request_count < 20
    assert report["tokens"] == fake.request_count * 1500
    with pytest.raises(UsageError, match="max_cost_usd"):
        optimizer.compile(dspex.Predict("question -> answer"), trainset=trainset, max_cost_usd=-1)


def _devset(n: int) -> list[Any]:
    return [dspex.Example(question=f"q{i}", answer="ok").with_inputs("question") for i in range(n)]


def _answer_ok(fake: FakeOpenAI) -> None:
    fake.reply = lambda body: Reply(
        text=chat_answer("ok"), prompt_tokens=1000, completion_tokens=500
    )


def test_evaluate_reports_its_cost_and_a_budget_stops_it_cleanly(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    _answer_ok(fake)
    dspex.configure(lm=_lm(fake, cache=False))
    metric = lambda ex, pred, trace=None: ex.answer == pred.answer  # noqa: E731
    qa = dspex.Predict("question -> answer")
    one_call = _expected(KNOWN, 1000, 500)
    full = dspex.Evaluate(devset=_devset(4), metric=metric, num_threads=2)(qa)
    assert full.cost_usd == pytest.approx(4 * one_call) and full.stopped_by is None
    threads = 3
    stopped = dspex.Evaluate(
        devset=_devset(30), metric=metric, num_threads=threads, max_cost_usd=5 * one_call
    )(qa)
    assert stopped.stopped_early and stopped.stopped_by == "Evaluate.max_cost_usd"
    assert stopped.errors == []  # the refused examples are not failures: they did not run
    calls = fake.request_count - 4
    # At most the calls in flight when the budget was reached go past it. A call
    # still in flight when the run stops is cancelled: no answer, so no usage to charge.
    assert 5 <= calls <= 5 + threads - 1
    # Examples still running when it stops are dropped, as with max_errors.
    assert 5 - threads < len(stopped.results) <= calls
    assert all(score for _, _, score in stopped.results)
    assert 5 * one_call - 1e-12 <= stopped.cost_usd <= calls * one_call + 1e-12
    tokens = dspex.Evaluate(devset=_devset(30), metric=metric, num_threads=1)(
        qa, max_tokens=2 * 1500
    )
    assert tokens.stopped_by == "Evaluate.max_tokens" and len(tokens.results) == 2
    with pytest.raises(UsageError, match="max_tokens=0"):
        dspex.Evaluate(devset=_devset(1), metric=metric, max_tokens=0)


def test_a_runtime_budget_stops_evaluate_and_says_so(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(budget={"max_tokens": 3 * 1500})
    _answer_ok(fake)
    dspex.configure(lm=_lm(fake, UNKNOWN, cache=False))
    result = dspex.Evaluate(
        devset=_devset(10), metric=lambda ex, pred, trace=None: True, num_threads=1
    )(dspex.Predict("question -> answer"))
    assert result.stopped_by == "runtime.max_tokens" and len(result.results) == 3
    assert result.cost_usd is None  # the model has no known price: unknown, not 0


def _answer_every_field(fake: FakeOpenAI) -> None:
    """Answer "ok" in every output field the system message asks for (any signature)."""

    def reply(body: dict[str, Any]) -> Reply:
        system = str(fake.messages_of(body)[0]["content"])
        outputs = system.split("Your output fields are:", 1)[-1].split("All interactions", 1)[0]
        names = dict.fromkeys(re.findall(r"\d+\. `(\w+)`", outputs))
        text = "".join(f"[[ ## {name} ## ]]\nok\n\n" for name in names)
        return Reply(text=text + "[[ ## completed ## ]]", prompt_tokens=1000, completion_tokens=500)

    fake.reply = reply


def test_a_proposal_refused_by_the_budget_ends_copro_with_its_best_so_far(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime()
    _answer_every_field(fake)
    dspex.configure(lm=_lm(fake, UNKNOWN, cache=False))
    student = dspex.Predict("question -> answer")
    optimizer = dspex.COPRO(
        metric=lambda ex, pred, trace=None: pred.answer == "ok", breadth=2, depth=3
    )
    # 1 first proposal, then 2 candidates x 2 examples scored: the next proposal is refused.
    compiled = optimizer.compile(
        student, trainset=_devset(2), eval_kwargs={"num_threads": 1}, max_tokens=5 * 1500
    )
    assert fake.request_count == 5
    assert optimizer.compile_cost is not None
    assert optimizer.compile_cost["stopped_by"] == "max_tokens"
    # The scored proposal (instruction "ok") won, not a copy of the student.
    assert compiled.signature.instructions == "ok"
    assert len(compiled.candidate_programs) == 2
    assert student.signature.instructions != "ok"


def test_an_optimizer_stopped_before_any_result_returns_the_student_and_says_why(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    start_runtime(budget={"max_tokens": 1500})
    _answer_every_field(fake)
    dspex.configure(lm=_lm(fake, UNKNOWN, cache=False))
    student = dspex.Predict("question -> answer")
    student.demos = [dspex.Example(question="q", answer="a")]
    # COPRO's first call is an instruction proposal: the second is refused by the runtime budget.
    dspex.Predict("question -> answer")(question="spend it")
    optimizer = dspex.COPRO(metric=lambda ex, pred, trace=None: True, breadth=2, depth=1)
    compiled = optimizer.compile(student, trainset=_devset(2), eval_kwargs={})
    assert fake.request_count == 1
    assert compiled is not student and compiled.demos == student.demos
    assert compiled.signature.instructions == student.signature.instructions
    assert optimizer.compile_cost is not None
    assert optimizer.compile_cost["stopped_by"] == "runtime.max_tokens"
    # Any other error still propagates.
    with pytest.raises(UsageError, match="trainset"):
        optimizer.compile(student, trainset=None, eval_kwargs={})


_OPTIMIZERS: dict[str, Any] = {
    "BootstrapFewShot": lambda metric, lm: dspex.BootstrapFewShot(
        metric=metric, max_bootstrapped_demos=20, max_labeled_demos=0
    ),
    "BootstrapFewShotWithRandomSearch": lambda metric, lm: dspex.BootstrapFewShotWithRandomSearch(
        metric=metric, num_candidate_programs=3, max_bootstrapped_demos=2, num_threads=4
    ),
    "MIPROv2": lambda metric, lm: dspex.MIPROv2(metric=metric, auto="light", num_threads=4),
    "COPRO": lambda metric, lm: dspex.COPRO(metric=metric, breadth=3, depth=2),
    "SIMBA": lambda metric, lm: dspex.SIMBA(
        metric=metric, bsize=4, num_candidates=2, max_steps=3, num_threads=4
    ),
    "GEPA": lambda metric, lm: dspex.GEPA(
        metric=lambda gold, pred, trace=None, name=None, sub=None: metric(gold, pred),
        max_metric_calls=80,
        reflection_lm=lm,
        num_threads=4,
    ),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_every_optimizer_stops_cleanly_on_its_compile_budget(
    start_runtime: StartRuntime, fake: FakeOpenAI, name: str
) -> None:
    start_runtime()
    _answer_every_field(fake)
    lm = _lm(fake, UNKNOWN, cache=False)
    dspex.configure(lm=lm)
    optimizer = _OPTIMIZERS[name](lambda ex, pred, trace=None: pred.answer == "ok", lm)
    extra = {"eval_kwargs": {"num_threads": 4}} if name == "COPRO" else {}
    compiled = optimizer.compile(
        dspex.Predict("question -> answer"), trainset=_devset(20), max_tokens=6 * 1500, **extra
    )
    assert isinstance(compiled, dspex.Predict)
    report = optimizer.compile_cost
    assert report is not None and report["stopped_by"] == "max_tokens"
    # No call starts once the limit is reached: only those already in flight (at
    # most 16, the widest fan-out here) go past it.
    assert report["tokens"] >= 6 * 1500
    assert fake.request_count <= 6 + 16


def test_unread_costs_do_not_keep_every_answer_alive(
    start_runtime: StartRuntime, fake: FakeOpenAI
) -> None:
    # A server between metric scrapes (or a long run) never reads a cost: the
    # telemetry actor must price its pending answers itself rather than keep them all.
    import gc

    from dspex.actors._lm._prices import LaterCost, PricedLater
    from dspex.actors._telemetry import SETTLE_AT

    rt = start_runtime()
    lm = _lm(fake, cache=False)
    calls = SETTLE_AT + 100
    with dspex.context(disable_history=True):
        for i in range(calls):
            lm(f"question {i}")
    rt.flush()  # the actor has handled every call's record
    gc.collect()
    alive = sum(isinstance(o, LaterCost) for o in gc.get_objects())
    assert alive < SETTLE_AT
    # Priced once the actor settled them: later answers come priced at once.
    assert not isinstance(lm.generate([{"role": "user", "content": "last"}], {}), PricedLater)
    models = rt.metrics()["models"]
    assert models[KNOWN]["requests"] == calls + 1
    assert models[KNOWN]["cost_usd"] == pytest.approx((calls + 1) * _expected(KNOWN, 1000, 500))
