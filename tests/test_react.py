"""``ReAct``: the agent loop, its trajectory, state, and the trajectory actor."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from wait_helpers import wait_past, wait_until

import dspex
from dspex.actors import RunContext, current_run
from dspex.actors._program_run import activate_run
from dspex.errors import AdapterParseError, ContextWindowError, ProgramError, UsageError
from dspex.programs import JSONAdapter, Module, Prediction, context
from dspex.programs._react import MAX_TRUNCATIONS, ReAct
from dspex.programs._tool import Tool
from dspex.supervision import count_children, which_children
from dspex.testing import DummyLM, FakeOpenAI, Fault, RecordedRequest


def step(tool: str, thought: str = "thinking", **args: Any) -> dict[str, Any]:
    return {"next_thought": thought, "next_tool_name": tool, "next_tool_args": args}


def final(answer: str) -> dict[str, Any]:
    return {"reasoning": "the trajectory says so", "answer": answer}


class Calls:
    """A search tool that records its calls and the thread they ran in."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.threads: list[threading.Thread] = []

    def search(self, query: str, k: int = 1) -> str:
        """Look a query up."""
        self.calls.append((query, k))
        self.threads.append(threading.current_thread())
        return f"{query} is in France"


def inline(fn: Callable[[], Any], run: RunContext | None = None) -> Any:
    """Run ``fn`` inside a run that has no runtime (the trajectory then runs inline)."""

    def body() -> Any:
        activate_run(run or RunContext(label="inline"))
        return fn()

    return contextvars.copy_context().run(body)


# -- the loop ------------------------------------------------------------------------------


def test_multi_step_trajectory_calls_tools_and_extracts() -> None:
    calls = Calls()
    lm = DummyLM(
        [
            step("search", "look it up", query="Paris", k=2),
            step("finish", "I know now"),
            final("France"),
        ]
    )
    react = ReAct("question -> answer", tools=[calls.search])
    with context(lm=lm):
        pred = react(question="Where is Paris?")
    assert isinstance(pred, Prediction)
    assert pred.answer == "France"
    assert pred.reasoning == "the trajectory says so"
    assert calls.calls == [("Paris", 2)]
    assert pred.trajectory == {
        "thought_0": "look it up",
        "tool_name_0": "search",
        "tool_args_0": {"query": "Paris", "k": 2},
        "observation_0": "Paris is in France",
        "thought_1": "I know now",
        "tool_name_1": "finish",
        "tool_args_1": {},
        "observation_1": "Completed.",
    }
    assert lm.calls == 3
    second_prompt = lm.history[1]["messages"][-1]["content"]
    assert "[[ ## observation_0 ## ]]\nParis is in France" in second_prompt
    extract_prompt = lm.history[2]["messages"][-1]["content"]
    assert "[[ ## tool_name_1 ## ]]\nfinish" in extract_prompt


def test_step_signature_lists_tools_and_finish() -> None:
    react = ReAct("question -> answer", tools=[Calls().search])
    sig = react.react.signature
    assert list(sig.input_fields) == ["question", "trajectory"]
    assert list(sig.output_fields) == ["next_thought", "next_tool_name", "next_tool_args"]
    assert sig.output_fields["next_tool_name"].annotation == Literal["search", "finish"]
    assert sig.output_fields["next_tool_args"].annotation == dict[str, Any]
    assert "(1) search" in sig.instructions and "(2) finish" in sig.instructions
    assert "Look a query up." in sig.instructions
    extract = react.extract.predict.signature
    assert list(extract.input_fields) == ["question", "trajectory"]
    assert list(extract.output_fields) == ["reasoning", "answer"]
    assert list(react.tools) == ["search", "finish"]


def test_tool_error_becomes_an_observation_and_the_loop_goes_on() -> None:
    def lookup(query: str) -> str:
        raise ValueError(f"no entry for {query}")

    lm = DummyLM([step("lookup", query="x"), step("finish"), final("unknown")])
    with context(lm=lm):
        pred = ReAct("question -> answer", tools=[lookup])(question="q")
    # DSPy's format: the error's traceback (at most 5 frames) after the tool's name.
    observation = pred.trajectory["observation_0"]
    assert observation.startswith("Execution error in lookup: \nTraceback (most recent call last):")
    assert observation.endswith("ValueError: no entry for x")
    assert 'in lookup\n    raise ValueError(f"no entry for {query}")' in observation
    assert pred.trajectory["tool_name_1"] == "finish"
    assert pred.answer == "unknown"


def test_bad_tool_args_from_the_lm_become_an_observation() -> None:
    calls = Calls()
    lm = DummyLM([step("search", query="a", limit=3), step("finish"), final("a")])
    with context(lm=lm):
        pred = ReAct("question -> answer", tools=[calls.search])(question="q")
    assert "no argument 'limit'" in pred.trajectory["observation_0"]
    assert calls.calls == []


def test_numeric_text_reaches_a_str_argument_as_text() -> None:
    calls = Calls()
    lm = DummyLM([step("search", query="2024"), step("finish"), final("ok")])
    with context(lm=lm):
        ReAct("question -> answer", tools=[calls.search])(question="q")
    assert calls.calls == [("2024", 1)]


def test_max_iters_caps_the_loop() -> None:
    calls = Calls()
    lm = DummyLM([step("search", query=str(i)) for i in range(2)] + [final("done")])
    react = ReAct("question -> answer", tools=[calls.search], max_iters=2)
    with context(lm=lm):
        pred = react(question="q")
    assert [q for q, _ in calls.calls] == ["0", "1"]
    assert "thought_2" not in pred.trajectory and pred.answer == "done"
    lm = DummyLM([step("search", query="only"), final("one")])
    with context(lm=lm):
        pred = react(question="q", max_iters=1)  # per call, as in DSPy
    assert pred.trajectory["tool_name_0"] == "search" and pred.answer == "one"
    assert lm.calls == 2


def test_unknown_tool_name_ends_the_trajectory_like_dspy(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # ChatAdapter rejects the name, its JSON fallback too: the loop ends, extraction runs.
    lm = DummyLM([step("teleport"), step("teleport"), final("stuck")])
    with context(lm=lm), caplog.at_level(logging.WARNING, "dspex.programs"):
        pred = ReAct("question -> answer", tools=[Calls().search])(question="q")
    assert pred.trajectory == {}
    assert pred.answer == "stuck"
    assert "did not choose a valid tool" in caplog.text


def test_a_tool_missing_from_the_table_is_an_observation_error() -> None:
    react = ReAct("question -> answer", tools=[Calls().search])
    del react.tools["search"]  # the LM may still name it: the signature lists it
    lm = DummyLM([step("search", query="x"), step("finish"), final("a")])
    with context(lm=lm):
        pred = react(question="q")
    observation = pred.trajectory["observation_0"]
    assert observation.startswith("Execution error in search: \nTraceback")
    assert "UsageError: no tool named 'search'" in observation


def test_json_adapter_parses_tool_name_and_args() -> None:
    calls = Calls()
    lm = DummyLM([step("search", query="Lyon", k=1), step("finish"), final("France")])
    with context(lm=lm, adapter=JSONAdapter()):
        pred = ReAct("question -> answer", tools=[calls.search])(question="q")
    assert calls.calls == [("Lyon", 1)]
    assert pred.answer == "France"
    # DSPy's rule: DummyLM lists no supported_params, so no response_format is sent.
    assert "response_format" not in lm.history[0]["params"]


def test_tools_may_be_tool_objects_and_are_checked() -> None:
    react = ReAct("question -> answer", tools=[Tool(Calls().search, name="web")])
    assert list(react.tools) == ["web", "finish"]
    with pytest.raises(UsageError, match=r"tools\[1\]=3 is not callable"):
        ReAct("question -> answer", tools=[Calls().search, 3])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="two tools are named 'search'"):
        ReAct("question -> answer", tools=[Calls().search, Calls().search])
    with pytest.raises(UsageError, match="reserves"):
        ReAct("question -> answer", tools=[Tool(len, name="finish")])
    with pytest.raises(UsageError, match="must be a list"):
        ReAct("question -> answer", tools=Calls().search)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="max_iters=0"):
        ReAct("question -> answer", tools=[], max_iters=0)


# -- predictors and state -------------------------------------------------------------------


def test_named_predictors_and_save_load_round_trip(tmp_path: Path) -> None:
    react = ReAct("question -> answer", tools=[Calls().search])
    assert [name for name, _ in react.named_predictors()] == ["react", "extract.predict"]
    react.react.demos = [
        {"question": "q", "trajectory": "", "next_thought": "t"}
        | {"next_tool_name": "finish", "next_tool_args": {}}
    ]
    react.extract.predict.demos = [
        {"question": "q", "trajectory": "", "reasoning": "r", "answer": "a"}
    ]
    react.react.signature = react.react.signature.with_instructions("Be brief.")
    path = tmp_path / "react.json"
    react.save(path)
    loaded = ReAct("question -> answer", tools=[Calls().search]).load(path)
    assert loaded.react.demos == react.react.demos
    assert loaded.extract.predict.demos == react.extract.predict.demos
    assert loaded.react.signature.instructions == "Be brief."
    assert loaded.dump_state() == react.dump_state()


def test_deepcopy_keeps_working_tools() -> None:
    calls = Calls()
    copy = ReAct("question -> answer", tools=[calls.search]).reset_copy()
    lm = DummyLM([step("search", query="x"), step("finish"), final("y")])
    with context(lm=lm):
        assert copy(question="q").answer == "y"
    assert [name for name, _ in copy.named_predictors()] == ["react", "extract.predict"]


# -- the trajectory actor ---------------------------------------------------------------------


class Agent(Module):
    """Wraps a ReAct; records its own thread and survives a failed trajectory."""

    def __init__(self, react: ReAct) -> None:
        super().__init__()
        self.react = react
        self.thread: threading.Thread | None = None

    def forward(self, question: str) -> Prediction:
        self.thread = threading.current_thread()
        try:
            return self.react(question=question)  # type: ignore[no-any-return]
        except ProgramError as exc:
            return Prediction(answer="fallback", error=exc)


def test_a_trajectory_is_a_supervised_light_process_of_its_run() -> None:
    seen: list[tuple[threading.Thread, list[str]]] = []

    def search(query: str) -> str:
        """Look a query up."""
        run = current_run()
        assert run is not None and run.runtime is not None
        children = which_children(run.runtime.whereis("programs"))
        seen.append((threading.current_thread(), [c.id for c in children]))
        return f"{query} is in France"

    agent = Agent(ReAct("question -> answer", tools=[search]))
    lm = DummyLM([step("search", query="x"), step("finish"), final("ok")])
    with context(lm=lm):
        assert agent(question="q").answer == "ok"
    ((thread, ids),) = seen
    # No thread of its own (the run only waits for it), but a child of
    # programs beside its run while it runs.
    assert thread is agent.thread
    assert [i.split("-")[0] for i in ids] == ["run", "trajectory"]


def test_a_trajectory_with_a_deadline_runs_in_its_own_actor(
    start_runtime: Callable[..., dspex.Runtime],
) -> None:
    # Only another thread lets the run give up on a stuck tool at its deadline.
    rt = start_runtime()
    calls = Calls()
    react = ReAct("question -> answer", tools=[calls.search])
    outer: list[threading.Thread] = []

    def body() -> Prediction:
        outer.append(threading.current_thread())
        return react(question="q")  # type: ignore[no-any-return]

    lm = DummyLM([step("search", query="x"), step("finish"), final("ok")])
    with context(lm=lm):
        assert rt.run(body, timeout=60).answer == "ok"
    assert calls.threads[0] is not outer[0] is not threading.current_thread()


def test_without_a_runtime_the_trajectory_runs_inline() -> None:
    calls = Calls()
    react = ReAct("question -> answer", tools=[calls.search])
    lm = DummyLM([step("search", query="x"), step("finish"), final("ok")])
    with context(lm=lm):
        pred = inline(lambda: react(question="q"))
    assert pred.answer == "ok"
    assert calls.threads == [threading.current_thread()]


def test_system_exit_in_a_tool_fails_only_that_trajectory(
    start_runtime: Callable[..., dspex.Runtime],
) -> None:
    rt = start_runtime()

    def shutdown_now() -> str:
        raise SystemExit(3)

    react = ReAct("question -> answer", tools=[shutdown_now])
    agent = Agent(react)
    lm = DummyLM([step("shutdown_now"), step("shutdown_now"), step("finish"), final("ok")])
    with context(lm=lm):
        result = agent(question="q")  # the parent run catches the trajectory's failure
        assert result.answer == "fallback"
        assert isinstance(result.error.original, SystemExit)
        assert "trajectory" in str(result.error)
        with pytest.raises(ProgramError) as info:
            react(question="q")  # top level: the caller sees the ProgramError
        assert isinstance(info.value.original, SystemExit)
        assert react(question="q").answer == "ok"  # the runtime keeps working
    assert rt.running


def test_ordinary_errors_keep_their_type_across_the_actor() -> None:
    class Catcher(Module):
        def __init__(self) -> None:
            super().__init__()
            self.react = ReAct("question -> answer", tools=[Calls().search])

        def forward(self, question: str) -> Prediction:
            try:
                self.react(question=question)
            except AdapterParseError as exc:  # raised in the trajectory actor's thread
                return Prediction(error=exc)
            return Prediction(error=None)

    lm = DummyLM([step("finish")])  # nothing scripted for the extraction
    with context(lm=lm):
        error = Catcher()(question="q").error
    assert isinstance(error, AdapterParseError) and error.field == "reasoning"


class TimesOutLM(DummyLM):
    """An LM whose call fails with a TimeoutError (as a provider timeout does)."""

    def generate(self, messages: Any, params: Any) -> Any:
        raise TimeoutError("the model took too long")


def test_a_timeout_error_in_the_trajectory_reaches_the_caller() -> None:
    # A trajectory that failed with a TimeoutError once read as a wait that
    # timed out: the parent waited for it forever. A daemon thread bounds it.
    class Catcher(Module):
        def __init__(self) -> None:
            super().__init__()
            self.react = ReAct("question -> answer", tools=[Calls().search])

        def forward(self, question: str) -> Prediction:
            try:
                self.react(question=question)
            except TimeoutError as exc:  # raised in the trajectory actor's thread
                return Prediction(error=exc)
            return Prediction(error=None)

    box: list[Any] = []

    def call() -> None:
        with context(lm=TimesOutLM([])):
            box.append(Catcher()(question="q").error)

    thread = threading.Thread(target=call, name="react-timeout", daemon=True)
    thread.start()
    thread.join(30)
    assert box, "the run never returned"
    assert isinstance(box[0], TimeoutError) and "took too long" in str(box[0])


def slow_search(query: str) -> str:
    run = current_run()
    assert run is not None and run.deadline is not None
    wait_past(run.deadline)
    return "too late"


def test_deadline_is_checked_between_steps_inline() -> None:
    react = ReAct("question -> answer", tools=[slow_search])
    lm = DummyLM([step("slow_search", query="x"), step("finish"), final("never")])
    run = RunContext(deadline=time.monotonic() + 1.0, label="deadline")
    with context(lm=lm), pytest.raises(ProgramError, match="passed its deadline"):
        inline(lambda: react(question="q"), run)
    assert lm.calls == 1  # no step after the deadline


def test_deadline_of_the_run_bounds_the_trajectory_actor(
    start_runtime: Callable[..., dspex.Runtime],
) -> None:
    rt = start_runtime(runtime={"warm_runs": 0})
    react = ReAct("question -> answer", tools=[slow_search])
    lm = DummyLM([step("slow_search", query="x"), step("finish"), final("never")])
    with context(lm=lm), pytest.raises(ProgramError, match="deadline"):
        rt.run(lambda: react(question="q"), timeout=1.0)
    programs = rt.whereis("programs")
    wait_until(lambda: count_children(programs).active == 0, what="the trajectory actor ends")
    assert lm.calls == 1


def test_cancelling_the_run_stops_the_trajectory() -> None:
    run = RunContext(label="cancel")

    def stop_here() -> str:
        run.cancelled.set()
        return "stopping"

    react = ReAct("question -> answer", tools=[stop_here])
    lm = DummyLM([step("stop_here"), step("finish"), final("never")])
    with context(lm=lm), pytest.raises(ProgramError, match="cancelled"):
        inline(lambda: react(question="q"), run)
    assert lm.calls == 1


def test_acall_runs_async_tools() -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        return f"page {url}"

    lm = DummyLM([step("fetch", url="a"), step("finish"), final("done")])
    react = ReAct("question -> answer", tools=[fetch])
    with context(lm=lm):
        pred = asyncio.run(react.acall(question="q"))
    assert pred.trajectory["observation_0"] == "page a"
    assert pred.answer == "done"


def test_aforward_awaits_async_tools_on_the_callers_event_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def fetch(url: str) -> str:
        """Fetch a page."""
        loops.append(asyncio.get_running_loop())
        return f"page {url}"

    async def main() -> tuple[Prediction, asyncio.AbstractEventLoop]:
        return await react.acall(question="q"), asyncio.get_running_loop()

    lm = DummyLM([step("fetch", url="a"), step("finish"), final("done")])
    react = ReAct("question -> answer", tools=[fetch])
    with context(lm=lm):
        pred, loop = asyncio.run(main())
    assert loops == [loop]  # not a loop of its own in a worker thread
    assert pred.trajectory["tool_name_1"] == "finish" and pred.answer == "done"


def test_aforward_ends_an_overflowing_trajectory_and_still_extracts() -> None:
    extracted: list[dict[str, Any]] = []

    class Overflowing:
        async def acall(self, **kwargs: Any) -> Any:
            raise ContextWindowError("the prompt is too long")

    class Extract:
        async def acall(self, **kwargs: Any) -> Prediction:
            extracted.append(kwargs)
            return Prediction(answer="fallback")

    react = ReAct("question -> answer", tools=[Calls().search])
    react.react = Overflowing()  # type: ignore[assignment]
    react.extract = Extract()  # type: ignore[assignment]
    pred = asyncio.run(react.acall(question="q"))
    assert pred.trajectory == {} and pred.answer == "fallback"
    assert extracted == [{"question": "q", "trajectory": ""}]


# -- the context window ----------------------------------------------------------------------

LONG = "word " * 1000  # an observation of 1000 prompt tokens as the fakes count them
LONG_OBSERVATION = f"x: {LONG}"


def long_search(query: str) -> str:
    """Look a query up at length."""
    return f"{query}: {LONG}"


def scripted_agent(tools: list[str], answer: str = "Paris") -> Callable[[dict[str, Any]], str]:
    """A fake's reply function: the react steps pick ``tools`` in turn, then extraction."""
    picks = iter(tools)

    def reply(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        if "next_tool_name" not in system:
            return (
                f"[[ ## reasoning ## ]]\nfound it\n\n[[ ## answer ## ]]\n{answer}\n\n" + COMPLETED
            )
        tool = next(picks, "finish")
        args = '{"query": "x"}' if tool != "finish" else "{}"
        return (
            f"[[ ## next_thought ## ]]\nuse {tool}\n\n[[ ## next_tool_name ## ]]\n{tool}\n\n"
            f"[[ ## next_tool_args ## ]]\n{args}\n\n" + COMPLETED
        )

    return reply


COMPLETED = "[[ ## completed ## ]]"


def trajectory_of(request: RecordedRequest) -> str:
    return str(request.json["messages"][-1]["content"])


def fake_lm(fake: FakeOpenAI) -> dspex.LM:
    return dspex.LM("openai/agent", api_base=fake.url, api_key="sk-test-react-0000", cache=False)


def test_context_window_drops_the_oldest_step_and_retries(
    start_runtime: Callable[..., dspex.Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    start_runtime()
    react = ReAct("question -> answer", tools=[long_search])
    reply = scripted_agent(["long_search"] * 3)
    with FakeOpenAI(reply=reply, context_window=1800) as fake, context(lm=fake_lm(fake)):
        with caplog.at_level(logging.WARNING, logger="dspex.programs"):
            pred = react(question="Where is Paris?")
        outcomes = fake.outcomes
        prompts = [trajectory_of(r) for r in fake.requests]
    assert pred.answer == "Paris"
    # steps 0 and 1 were dropped (one each time the prompt outgrew the window);
    # the kept keys keep their numbers, as in DSPy
    assert list(pred.trajectory) == [
        f"{kind}_{i}"
        for i in (2, 3)
        for kind in ("thought", "tool_name", "tool_args", "observation")
    ]
    assert pred.trajectory["tool_name_3"] == "finish"
    # 4 steps + extraction accepted, 2 refusals, each retried once: not by the LM client
    assert outcomes == {"ok": 5, "context_window": 2}
    refused, retried = prompts[2], prompts[3]
    assert "observation_0" in refused and "observation_1" in refused
    assert "observation_0" not in retried and "observation_1" in retried
    assert sum("context window" in r.getMessage() for r in caplog.records) == 2


def test_extraction_is_truncated_too(start_runtime: Callable[..., dspex.Runtime]) -> None:
    start_runtime()
    react = ReAct("question -> answer", tools=[Calls().search])
    schedule = [None, None, Fault.context_window(limit=100)]  # the extraction's first try
    reply = scripted_agent(["search"])
    with FakeOpenAI(reply=reply, schedule=schedule) as fake, context(lm=fake_lm(fake)):
        pred = react(question="Where is Paris?")
        extract_prompts = [trajectory_of(r) for r in fake.requests[2:]]
        assert fake.outcomes == {"ok": 3, "context_window": 1}
    assert pred.answer == "Paris"
    assert list(pred.trajectory) == ["thought_1", "tool_name_1", "tool_args_1", "observation_1"]
    assert "thought_0" in extract_prompts[0] and "thought_0" not in extract_prompts[1]


def test_nothing_left_to_drop_raises_context_window_error(
    start_runtime: Callable[..., dspex.Runtime],
) -> None:
    start_runtime()
    react = ReAct("question -> answer", tools=[long_search])
    with FakeOpenAI(reply=scripted_agent([]), context_window=50) as fake:
        with context(lm=fake_lm(fake)), pytest.raises(ContextWindowError) as info:
            react(question="Where is Paris?")
        # the first step cannot fit (it ends the loop, as in DSPy), then the extraction
        # cannot either; neither is retried, nothing being left to drop
        assert fake.outcomes == {"context_window": 2}
    # a top-level call wraps it as ProgramError[ContextWindowError]; .original is ours
    err = info.value.original if isinstance(info.value, ProgramError) else info.value
    assert isinstance(err, ContextWindowError)
    assert "no step left to drop" in str(err) and "larger context window" in str(err)
    assert err.model == "openai/agent" and err.retryable is False
    cause = err.__cause__
    assert isinstance(cause, ContextWindowError) and cause.status == 400
    assert cause.context_window == 50 and cause.prompt_tokens is not None
    assert cause.prompt_tokens > 50


def test_truncation_is_bounded_like_dspy(start_runtime: Callable[..., dspex.Runtime]) -> None:
    start_runtime()
    react = ReAct("question -> answer", tools=[Calls().search])
    reply = scripted_agent(["search"] * 5)

    def schedule(index: int) -> Fault | None:
        return Fault.context_window(limit=10) if index >= 4 else None

    with FakeOpenAI(reply=reply, schedule=schedule) as fake, context(lm=fake_lm(fake)):
        with pytest.raises(ContextWindowError) as info:
            react(question="Where is Paris?")
        prompts = [trajectory_of(r) for r in fake.requests]
    # 4 steps; step 4 gets MAX_TRUNCATIONS tries, each after a drop, then ends the loop
    # (DSPy 3.4.1's order); the extraction then has one step left, which is kept
    assert len(prompts) == 4 + MAX_TRUNCATIONS + 1
    assert [p.count("[[ ## thought_") for p in prompts[4:]] == [4, 3, 2, 1]
    err = info.value.original if isinstance(info.value, ProgramError) else info.value
    assert "no step left to drop" in str(err)
    assert isinstance(err, ContextWindowError) and err.model == "openai/agent"
    assert isinstance(err.__cause__, ContextWindowError) and err.__cause__.status == 400


def test_a_call_gets_three_tries_then_says_so() -> None:
    react = ReAct("question -> answer", tools=[Calls().search])
    calls: list[int] = []

    def always_too_long(**kwargs: Any) -> Any:
        calls.append(kwargs["trajectory"].count("[[ ## thought_"))
        raise ContextWindowError("too long", model="m")

    trajectory = {
        f"{k}_{i}": f"v{i}"
        for i in range(4)
        for k in ("thought", "tool_name", "tool_args", "observation")
    }
    # DSPy's wording, which code written for DSPy matches on
    with pytest.raises(ContextWindowError, match=f"even after {MAX_TRUNCATIONS} attempts") as info:
        react._call_fitting(always_too_long, {"question": "q"}, trajectory)  # type: ignore[arg-type]
    assert calls == [4, 3, 2]  # as DSPy: three tries, a step dropped after each
    assert len(trajectory) == 4  # the third drop happened too (in place)
    assert isinstance(info.value.__cause__, ContextWindowError) and info.value.model == "m"


def test_an_overridden_truncate_trajectory_is_used(
    start_runtime: Callable[..., dspex.Runtime],
) -> None:
    start_runtime()

    class Clipping(ReAct):
        def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
            return {
                k: (v[:20] if k.startswith("observation") else v) for k, v in trajectory.items()
            }

    react = Clipping("question -> answer", tools=[long_search])
    reply = scripted_agent(["long_search", "long_search"])
    with FakeOpenAI(reply=reply, context_window=1800) as fake, context(lm=fake_lm(fake)):
        pred = react(question="Where is Paris?")
        assert fake.outcomes == {"ok": 4, "context_window": 1}
    clipped = LONG_OBSERVATION[:20]
    assert [pred.trajectory[f"observation_{i}"] for i in range(3)] == [
        clipped,
        clipped,
        "Completed.",
    ]
    assert pred.trajectory["tool_name_2"] == "finish"


def test_truncate_trajectory_drops_the_four_oldest_entries() -> None:
    react = ReAct("question -> answer", tools=[Calls().search])
    trajectory = {
        f"{k}_{i}": i
        for i in range(2)
        for k in ("thought", "tool_name", "tool_args", "observation")
    }
    assert react.truncate_trajectory(trajectory) is trajectory
    assert list(trajectory) == ["thought_1", "tool_name_1", "tool_args_1", "observation_1"]
    with pytest.raises(ContextWindowError, match="no step left to drop"):
        react.truncate_trajectory(trajectory)  # the last step is kept, as in DSPy
    assert len(trajectory) == 4


# -- DSPy's exact prompt --------------------------------------------------------------------


class Point(BaseModel):  # its name is the schema title the golden prompt shows
    x: int
    y: int = 0


def _search(query: str, k: int = 3) -> str:
    """Search the web.

    Returns one snippet per hit.
    """
    return f"{query} is in France"


def _nearest(origin: Point, tags: list[str] = ["a"]) -> int:  # noqa: B006  (the prompt shows it)
    return 1


def _nodoc(n: int) -> int:
    return n


def _golden_agent_tools() -> list[Tool]:
    return [Tool(f, name=f.__name__[1:]) for f in (_search, _nearest, _nodoc)]


def test_agent_sends_dspys_exact_messages() -> None:
    # tests/golden/react_*.txt are the messages DSPy 3.4.1 sends for this agent and script.
    from adapter_helpers import assert_messages_equal, load_golden

    lm = DummyLM(
        [
            step("search", "look", query="Paris"),
            step("finish", "done"),
            {"reasoning": "r", "answer": "France", "score": 3},
        ]
    )
    react = ReAct("question, context -> answer, score: int", tools=_golden_agent_tools())
    with context(lm=lm):
        pred = react(question="Where is Paris?", context="geo")
    assert pred.score == 3
    for index, name in enumerate(["react_step_first", "react_step_second", "react_extract"]):
        assert_messages_equal(lm.history[index]["messages"], load_golden(name))
    finish = react.tools["finish"]
    assert finish.desc == (
        "Marks the task as complete. That is, signals that all information for producing the "
        "outputs, i.e. `answer`, `score`, are now available to be extracted."
    )
