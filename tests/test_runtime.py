"""The application tree end to end, through the public API (``dspex.start``).

Each test starts its own Runtime (``start_runtime``) and fake provider
servers, and stops them; see ``runtime_helpers``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import SECRET, StartRuntime, chat_answer, echo_answers, make_lm
from wait_helpers import wait_until

import dspex
from dspex.errors import (
    ActorStoppedError,
    ConfigError,
    LMTimeoutError,
    MaxChildrenError,
    ProgramError,
    RegistryError,
)
from dspex.programs import Module
from dspex.testing import FakeOpenAI, Fault

SERVICES = ["config", "telemetry", "cache", "lms", "programs", "servers", "coordinators"]


@pytest.fixture
def fake() -> Any:
    with FakeOpenAI(api_key=SECRET) as server:
        echo_answers(server)
        yield server


# -- the tree ----------------------------------------------------------------------------


def test_start_runs_seven_services_and_stop_leaves_no_thread(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with dspex.start(cache={"dir": tmp_path}) as rt:
        assert rt.running
        root = rt.tree()
        assert [child.id for child in root.children] == SERVICES
        assert all(child.status == "alive" for child in root.children)
        assert len(set(threading.enumerate()) - before) >= len(SERVICES)
    assert not rt.running
    wait_until(lambda: not (set(threading.enumerate()) - before), timeout=10, what="threads end")
    with pytest.raises(ActorStoppedError):
        rt.metrics()
    assert rt.stop() is True  # idempotent


def test_tree_text_shows_services_and_lm_clients(start_runtime: StartRuntime, fake: Any) -> None:
    rt = start_runtime()
    lm = make_lm(fake)
    assert lm("hello") == [chat_answer("hello")]
    text = str(rt.tree())
    assert text.splitlines()[0].startswith("dspex (Supervisor")
    for name in SERVICES:
        assert f" {name} (" in text
    assert "lm:openai/test-model" in text and "LMClient" in text
    assert SECRET not in text


SCRIPT = """
import dspex
from dspex.testing import FakeOpenAI

fake = FakeOpenAI(reply="[[ ## answer ## ]]\\n4\\n\\n[[ ## completed ## ]]").start()
dspex.configure(lm=dspex.LM("openai/m", api_base=fake.url, api_key="k"))
print(dspex.Predict("question -> answer")(question="2+2?").answer)
fake.stop()
"""


def test_a_plain_script_starts_the_default_runtime_and_exits(tmp_path: Path) -> None:
    env = {**os.environ, "DSPEX_CACHE__DIR": str(tmp_path)}
    # The exit hook stops the default runtime (flushing it) as the main thread
    # ends; the script must exit cleanly and in time.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"


# -- config ----------------------------------------------------------------------------------


def test_config_errors_name_the_key_and_value(tmp_path: Path, start_runtime: StartRuntime) -> None:
    with pytest.raises(ConfigError) as bad_value:
        dspex.start(temperature=5)
    assert bad_value.value.key == "temperature"
    assert "temperature" in str(bad_value.value) and "5" in str(bad_value.value)

    with pytest.raises(ConfigError) as bad_nested:
        dspex.start(runtime={"max_runs": 0})
    assert bad_nested.value.key == "runtime.max_runs"

    toml = tmp_path / "dspex.toml"
    toml.write_text('temperature = 0.5\n[cache\ndir = "x"\n')
    with pytest.raises(ConfigError) as bad_file:
        dspex.start(config=toml)
    assert str(toml) in str(bad_file.value) and "line" in str(bad_file.value)

    toml.write_text("[runtime]\nmax_runs = -3\n")
    with pytest.raises(ConfigError) as bad_in_file:
        dspex.start(config=toml)
    assert bad_in_file.value.key == "runtime.max_runs" and str(toml) in str(bad_in_file.value)

    rt = start_runtime(temperature=0.2)
    with pytest.raises(ConfigError) as bad_configure:
        dspex.configure(temperature=-1)
    assert bad_configure.value.key == "temperature"
    assert rt.settings.temperature == 0.2  # a rejected change changes nothing


def test_configure_from_a_non_main_thread(start_runtime: StartRuntime, fake: Any) -> None:
    rt = start_runtime()
    lm = make_lm(fake)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            dspex.configure(lm=lm, temperature=0.3, max_tokens=77)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=worker, name="not-main")
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and errors == []
    assert dspex.settings.lm is lm
    assert rt.settings.temperature == 0.3 and rt.settings.max_tokens == 77

    prediction = dspex.Predict("question -> answer")(question="from main")
    assert prediction.answer == "from main"
    body = fake.requests[-1].json
    assert body["temperature"] == 0.3 and body["max_completion_tokens"] == 77


def test_request_parameter_precedence(start_runtime: StartRuntime, fake: Any) -> None:
    start_runtime(temperature=0.1, max_tokens=50)
    plain, own = make_lm(fake), make_lm(fake, temperature=0.7)
    sent: list[tuple[Any, Any]] = []

    def call(lm: Any, prompt: str, **params: Any) -> None:
        lm(prompt, **params)
        body = fake.requests[-1].json
        sent.append((body.get("temperature"), body.get("max_completion_tokens")))

    call(plain, "settings")  # the runtime's settings are the defaults
    call(own, "the LM's own")  # the LM's keyword arguments beat them
    with dspex.context(temperature=0.2):
        call(own, "context")  # a context override beats the LM's
        call(own, "per call", temperature=0.3, max_tokens=9)  # and a call beats all
    assert sent == [(0.1, 50), (0.7, 50), (0.2, 50), (0.3, 9)]


class Probe(Module):
    """Records where its forward ran and which LM was in effect there."""

    def __init__(self) -> None:
        self.qa = dspex.Predict("question -> answer")
        self.seen: list[tuple[threading.Thread, Any]] = []

    def forward(self, question: str) -> Any:
        self.seen.append((threading.current_thread(), dspex.settings.lm))
        return self.qa(question=question)


def test_context_overrides_reach_the_run_actor(start_runtime: StartRuntime, fake: Any) -> None:
    start_runtime()
    with FakeOpenAI(api_key=SECRET) as other:
        echo_answers(other, prefix="other:")
        lm1, lm2 = make_lm(fake), make_lm(other)
        dspex.configure(lm=lm1)
        probe = Probe()
        with dspex.context(lm=lm2, temperature=0.9):
            inside = probe(question="inside")
        outside = probe(question="outside")
        assert inside.answer == "other:inside" and outside.answer == "outside"
        assert [r.json["messages"][-1]["content"].count("inside") for r in other.requests] == [1]
        assert other.requests[0].json["temperature"] == 0.9
        assert fake.request_count == 1 and "temperature" not in fake.requests[0].json
    (run_thread, lm_in_run), (_, lm_after) = probe.seen
    assert run_thread is threading.current_thread()  # a light run borrows its caller's thread
    assert lm_in_run is lm2 and lm_after is lm1


# -- program runs ----------------------------------------------------------------------------


class Fails(Module):
    def forward(self, question: str) -> Any:
        if question == "bad":
            raise KeyError("no such thing")
        return dspex.Prediction(answer=question)


def test_a_failing_forward_fails_only_that_call(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    program = Fails()
    questions = ["ok1", "bad", "ok2", "bad", "ok3"]
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(program, question=q) for q in questions]
        outcomes: list[Any] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=30).answer)
            except Exception as exc:
                outcomes.append(exc)
    assert outcomes[0::2] == ["ok1", "ok2", "ok3"]
    for error in outcomes[1::2]:
        assert isinstance(error, KeyError) and isinstance(error, ProgramError)
        assert isinstance(error.__cause__, KeyError)
        assert error.__cause__.__traceback__ is not None  # the run thread's traceback survives
    assert program(question="still fine").answer == "still fine"
    runs = rt.metrics()["runs"]
    assert runs["started"] == 6 and runs["succeeded"] == 4 and runs["failed"] == 2
    assert runs["errors"] == {"KeyError": 2}


class TimesOut(Module):
    def forward(self, question: str) -> Any:
        raise TimeoutError(f"gave up on {question}")


class OwnTimeout(TimeoutError):
    """A user's TimeoutError subclass."""


def outcome_within(fn: Any, seconds: float = 30.0) -> BaseException | None:
    """What ``fn()`` raised (None: it returned), failing the test if it never finishes.

    It runs in a daemon thread: a call that spins forever fails this test
    without hanging the rest of the suite.
    """
    box: list[BaseException | None] = []

    def call() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=call, name="bounded-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if not box:
        pytest.fail(f"the call did not return within {seconds}s")
    return box[0]


# A run that failed with a TimeoutError once looked like a reply wait that
# timed out, and the caller waited for it forever.


def test_a_forward_raising_timeout_error_returns_it(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    error = outcome_within(lambda: TimesOut()(question="q1"))
    assert isinstance(error, TimeoutError) and "gave up on q1" in str(error)

    def job() -> None:
        raise OwnTimeout("own")

    error = outcome_within(lambda: rt.run(job))
    assert isinstance(error, OwnTimeout)
    assert rt.metrics()["runs"]["errors"] == {"TimeoutError": 1, "OwnTimeout": 1}


def test_an_lm_timeout_in_a_top_level_predict_returns(
    start_runtime: StartRuntime, fake: Any
) -> None:
    rt = start_runtime()
    fake.latency = 1.0
    lm = make_lm(fake, timeout=0.2, num_retries=0, cache=False)

    def predict() -> None:
        with dspex.context(lm=lm):
            dspex.Predict("question -> answer")(question="slow")

    assert isinstance(outcome_within(predict), LMTimeoutError)
    assert rt.running


class Gate(Module):
    """Blocks in forward until released; counts how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.entered = 0
        self.release = threading.Event()

    def forward(self, i: int) -> Any:
        with self.lock:
            self.running += 1
            self.entered += 1
            self.peak = max(self.peak, self.running)
        try:
            assert self.release.wait(30), "never released"
            return i
        finally:
            with self.lock:
                self.running -= 1


def test_max_runs_bounds_concurrency_and_callers_wait(start_runtime: StartRuntime) -> None:
    start_runtime(runtime={"max_runs": 2})
    gate = Gate()
    with ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(gate, i=i) for i in range(5)]
        wait_until(lambda: gate.entered == 2, what="two runs started")
        assert not any(f.done() for f in futures)  # the other three wait, none failed
        gate.release.set()
        results = [f.result(timeout=30) for f in futures]
    assert results == [0, 1, 2, 3, 4]
    assert gate.peak == 2


def test_many_short_runs_under_a_small_bound_never_hit_max_children(
    start_runtime: StartRuntime,
) -> None:
    start_runtime(runtime={"max_runs": 2})
    program = Fails()
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(program, question=f"q{i}") for i in range(200)]
        answers = []
        for future in futures:
            try:
                answers.append(future.result(timeout=60).answer)
            except MaxChildrenError as exc:  # pragma: no cover - the bug this guards
                pytest.fail(f"a caller past the bound crashed instead of waiting: {exc}")
    assert answers == [f"q{i}" for i in range(200)]


# -- metrics and history ------------------------------------------------------------------------


def test_metrics_snapshot(start_runtime: StartRuntime, fake: Any) -> None:
    rt = start_runtime(lm_client={"num_retries": 0})
    lm = make_lm(fake)
    dspex.configure(lm=lm)
    qa = dspex.Predict("question -> answer")
    assert qa(question="one").answer == "one"
    assert qa(question="one").answer == "one"  # a cache hit
    assert qa(question="two").answer == "two"
    fake.schedule = lambda i: Fault.error(500) if i == 2 else None
    with pytest.raises(dspex.ProviderError):
        qa(question="three")
    metrics = rt.metrics()
    model = metrics["models"]["openai/test-model"]
    assert model["requests"] == 4
    assert model["errors"] == {"ProviderError": 1}
    assert model["cache_hits"] == 1 and model["cache_hit_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert model["p50_ms"] is not None and model["p95_ms"] >= model["p50_ms"]
    assert model["prompt_tokens"] > 0 and model["completion_tokens"] > 0
    assert model["total_tokens"] == model["prompt_tokens"] + model["completion_tokens"]
    runs = metrics["runs"]
    assert (runs["started"], runs["succeeded"], runs["failed"]) == (4, 3, 1)
    assert metrics["cache"]["hits"] == 1 and metrics["cache"]["misses"] == 3
    assert metrics["supervision"]["restarts"] == 0
    client = next(iter(metrics["lm_clients"].values()))
    assert client["upstream_requests"] == 3 and client["successes"] == 2


def test_inspect_history_prints_the_last_n_calls(
    start_runtime: StartRuntime, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    start_runtime(telemetry={"history_size": 3})
    lm = make_lm(fake)
    for i in range(5):
        lm(f"prompt number {i}")
    capsys.readouterr()
    text = dspex.inspect_history(2)
    printed = capsys.readouterr().out
    assert printed.strip() == text.strip()
    assert "prompt number 3" in text and "prompt number 4" in text
    assert "prompt number 2" not in text
    assert text.index("prompt number 3") < text.index("prompt number 4")
    everything = dspex.inspect_history(10)  # the ring holds history_size entries only
    assert everything.count("User message:") == 3
    # DSPy's lm.history: the same bounded ring, this model's calls only
    history = lm.history
    assert [h["messages"][-1]["content"] for h in history] == [
        f"prompt number {i}" for i in (2, 3, 4)
    ]
    assert all(h["model"] == lm.model and h["cost"] is None for h in history)
    assert history[-1]["outputs"] and history[-1]["usage"]["prompt_tokens"] >= 0


def test_warm_spare_run_actors_serve_one_run_each() -> None:
    import threading as _threading

    from dspex.actors._program_run import current_run

    with dspex.start(runtime={"warm_runs": 1}) as rt:
        assert len(rt._spares) == 1  # pre-started at start
        spare = rt._spares[0]
        seen: list[object] = []

        def job() -> str:
            seen.append((_threading.current_thread().name, current_run()))
            return "ok"

        assert rt.run(job, timeout=30) == "ok"
        assert not spare.is_alive() or spare not in rt._spares  # consumed, never reused
        assert rt.run(job, timeout=30) == "ok"
        assert len({name for name, _ in seen}) == 2  # a fresh actor thread per run
        assert all(run is not None for _, run in seen)
    assert rt._spares == [] or all(not ref.is_alive() for ref in rt._spares)


def test_the_replacement_spare_starts_before_the_job_runs() -> None:
    with dspex.start(runtime={"warm_runs": 1}) as rt:
        first = rt._spares[0]
        during: list[object] = []

        def job() -> str:
            during.extend(rt._spares)  # the run refilled the spares before running this
            return "ok"

        assert rt.run(job, timeout=30) == "ok"
        assert len(during) == 1 and during[0] is not first


def test_run_events_reach_telemetry_in_order(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    seen: list[tuple[str, int]] = []
    done = threading.Event()

    def subscriber(event: Any) -> None:  # the Telemetry actor's thread
        if event.name.startswith("program.run."):
            seen.append((event.name, event.data["run_id"]))
            if len(seen) == 4:
                done.set()

    rt.whereis("telemetry").proxy().subscribe(subscriber).get(timeout=5)

    def fails() -> None:
        raise ValueError("no")

    assert rt.run(lambda: 1) == 1
    with pytest.raises(ValueError):
        rt.run(fails)
    assert done.wait(5)
    (a, _), (b, first), (c, _), (d, second) = seen
    assert [a, b, c, d] == [
        "program.run.start",
        "program.run.stop",
        "program.run.start",
        "program.run.exception",
    ]
    assert seen[0][1] == first and seen[2][1] == second != first
    runs = rt.metrics()["runs"]
    assert (runs["started"], runs["succeeded"], runs["failed"]) == (2, 1, 1)


def test_run_events_keep_their_data_and_count_without_listeners(
    start_runtime: StartRuntime,
) -> None:
    # Runs are queued as compact notes; the actor counts them directly when
    # nobody listens and builds the events (same data as before) when someone does.
    rt = start_runtime()

    def fails() -> None:
        raise KeyError("no")

    assert rt.run(lambda: 1, label="quiet") == 1
    with pytest.raises(KeyError):
        rt.run(fails, label="quiet")
    runs = rt.metrics()["runs"]
    assert (runs["started"], runs["succeeded"], runs["failed"]) == (2, 1, 1)
    assert runs["errors"] == {"KeyError": 1} and runs["p50_ms"] is not None
    events_before = rt.metrics()["events"]

    seen: list[Any] = []
    done = threading.Event()

    def subscriber(event: Any) -> None:  # the Telemetry actor's thread
        if event.name.startswith("program.run."):
            seen.append(event)
            if len(seen) == 4:
                done.set()

    rt.whereis("telemetry").proxy().subscribe(subscriber).get(timeout=5)
    assert rt.run(lambda: 1, label="heard") == 1
    with pytest.raises(KeyError):
        rt.run(fails, label="heard")
    assert done.wait(5)
    start, stop, _, failed = seen
    assert start.data == {"run_id": start.data["run_id"], "label": "heard"}
    assert set(stop.data) == {"run_id", "label", "duration_ms"}
    assert stop.data["run_id"] == start.data["run_id"] and stop.data["duration_ms"] >= 0
    assert set(failed.data) == {"run_id", "label", "duration_ms", "error"}
    assert failed.data["error"] == "KeyError"
    assert start.time <= stop.time <= failed.time
    after = rt.metrics()
    assert after["runs"]["started"] == 4 and after["runs"]["errors"] == {"KeyError": 2}
    assert after["events"] >= events_before + 4


def test_a_long_runs_start_event_is_not_held_back(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    started = threading.Event()
    release = threading.Event()
    rt.whereis("telemetry").proxy().subscribe(
        lambda event: started.set() if event.name == "program.run.start" else None
    ).get(timeout=5)
    # Once telemetry stopped polling the emitter, only the caller's wait can flush.
    wait_until(lambda: rt.telemetry._watcher is None, what="telemetry idle")
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(rt.run, lambda: release.wait(10))
        try:
            assert started.wait(5)  # within a poll of the waiting caller, not at the end
            assert not result.done()
        finally:
            release.set()
        assert result.result(timeout=10) is True


def test_whereis_refuses_a_name_no_service_ever_had_at_once(start_runtime: StartRuntime) -> None:
    rt = start_runtime()
    # Before: it waited CALL_TIMEOUT (10 s) for the name, then said it "did not come back".
    with pytest.raises(RegistryError, match=r"rt\.whereis\('nope'\): this runtime has no service"):
        rt.whereis("nope")
    assert rt.whereis("cache").is_alive()
