"""Ctrl-C in real processes: Evaluate, batch, Parallel and a compile stop at once and exit.

Each test runs a script in a subprocess whose examples block for a minute in
user code (an LM's ``generate`` that sleeps: nothing can cut it short). The
test waits for the script to say an example is running, sends SIGINT, and
requires the script to report the interrupt and the process to exit well
before any example could have finished: so nothing waited for the running
examples, and no dspex thread held interpreter exit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import pytest

BLOCK_SECONDS = 60  # how long a running example would take to finish on its own
EXIT_BOUND = 30.0  # generous: well under BLOCK_SECONDS, far over what a prompt exit takes

PRELUDE = """
import sys, threading, time
import dspex
from dspex.testing import DummyLM

def say(word):
    # One write per line: print() writes the text and the newline apart, so
    # two threads printing at once could glue their markers together.
    sys.stdout.write(word + "\\n")
    sys.stdout.flush()

class Slow(DummyLM):
    # Examples "q0"/"q1" answer at once; the others block in user code.
    def generate(self, messages, params):
        text = messages[-1]["content"]
        if "q0" not in text and "q1" not in text:
            say("RUNNING")
            time.sleep(BLOCK)
        return super().generate(messages, params)

lm = Slow({f"q{i}": {"answer": f"A{i}"} for i in range(8)})
dspex.configure(lm=lm)
devset = [dspex.Example(question=f"q{i}", answer=f"A{i}").with_inputs("question")
          for i in range(8)]
qa = dspex.Predict("question -> answer")

def exact(example, prediction, trace=None):
    return example.answer == prediction.answer
""".replace("BLOCK", str(BLOCK_SECONDS))

SCRIPTS = {
    "evaluate": """
evaluate = dspex.Evaluate(devset=devset, metric=exact, num_threads=2, journal=sys.argv[1])
try:
    evaluate(qa)
except KeyboardInterrupt:
    say("RAISED")
""",
    "evaluate_return": """
evaluate = dspex.Evaluate(devset=devset, metric=exact, num_threads=2, journal=sys.argv[1],
                          on_interrupt="return")
result = evaluate(qa)
say(f"RETURNED {result.interrupted} {len(result.results)}")
""",
    "batch": """
try:
    qa.batch(devset[2:], num_threads=2)
except KeyboardInterrupt:
    say("RAISED")
""",
    "parallel": """
try:
    dspex.Parallel(num_threads=2)([(qa, ex) for ex in devset[2:]])
except KeyboardInterrupt:
    say("RAISED")
""",
    "compile": """
from dspex.teleprompt import BootstrapFewShot
try:
    BootstrapFewShot(metric=exact, num_threads=2).compile(qa, trainset=devset[2:])
except KeyboardInterrupt:
    say("RAISED")
""",
    "uncaught": """
dspex.Evaluate(devset=devset[2:], metric=exact, num_threads=2)(qa)
""",
}


def _start(script: str, tmp_path: Path) -> subprocess.Popen[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(PRELUDE + script))
    env = {**os.environ, "DSPEX_CACHE__DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, str(path), str(tmp_path / "journal.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(stream: IO[str], marker: str) -> None:
    """Read lines until ``marker`` (pytest-timeout bounds a script that never says it)."""
    seen = []
    for line in stream:
        if marker in line:
            return
        seen.append(line)
    pytest.fail(f"the script ended without printing {marker!r}: {seen}")


def _interrupt(proc: subprocess.Popen[str]) -> tuple[str, str, float]:
    """SIGINT once an example runs; (stdout after it, stderr, seconds until exit)."""
    assert proc.stdout is not None
    _wait_for(proc.stdout, "RUNNING")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=EXIT_BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the process did not exit within {EXIT_BOUND}s of SIGINT: {err[-2000:]}")
    return out, err, time.monotonic() - sent


@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", ["evaluate", "batch", "parallel", "compile"])
def test_sigint_raises_at_once_and_the_process_exits(mode: str, tmp_path: Path) -> None:
    proc = _start(SCRIPTS[mode], tmp_path)
    out, err, took = _interrupt(proc)
    assert "RAISED" in out, err[-2000:]
    assert proc.returncode == 0, err[-2000:]
    assert "Exception ignored" not in err
    assert took < BLOCK_SECONDS  # nobody waited for the examples stuck in user code
    print(f"{mode}: exited {took:.2f}s after SIGINT")  # shown with -s; not asserted


@pytest.mark.timeout(300)
def test_sigint_keeps_what_was_scored_and_can_return_the_partial_result(tmp_path: Path) -> None:
    proc = _start(SCRIPTS["evaluate_return"], tmp_path)
    assert proc.stdout is not None
    out, err, _ = _interrupt(proc)
    assert proc.returncode == 0, err[-2000:]
    [line] = [line for line in out.splitlines() if "RETURNED" in line] or [err[-2000:]]
    words = line[line.index("RETURNED") :].split()
    assert words[:2] == ["RETURNED", "True"], err[-2000:]
    journal = tmp_path / "journal.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    # What the result holds is what the journal holds: nothing recorded was lost.
    assert len(lines) == int(words[2])
    # Only q0 and q1 can have succeeded: the others were still blocked.
    assert {line["index"] for line in lines if line["error"] is None} <= {0, 1}, lines
    assert "Exception ignored" not in err


@pytest.mark.timeout(300)
def test_an_uncaught_interrupt_ends_the_process(tmp_path: Path) -> None:
    proc = _start(SCRIPTS["uncaught"], tmp_path)
    _, err, _ = _interrupt(proc)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err
    assert "Exception ignored" not in err


@pytest.mark.timeout(300)
def test_a_finished_script_exits_though_a_worker_is_still_busy(tmp_path: Path) -> None:
    # A pool nobody stopped, its worker stuck in user code: exit must not wait.
    script = """
from dspex.supervision import WorkerPool
pool = WorkerPool(size=1)
pool.submit(time.sleep, BLOCK)
say("MAIN DONE")
""".replace("BLOCK", str(BLOCK_SECONDS))
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(PRELUDE + script))
    done = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=EXIT_BOUND,
        check=False,
        env={**os.environ, "DSPEX_CACHE__DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MAIN DONE" in done.stdout
    assert "Exception ignored" not in done.stderr


# -- in process: Ctrl-C during a top-level run ------------------------------------------------


def test_ctrl_c_during_a_top_level_run_cancels_it_and_its_evaluation(tmp_path: Path) -> None:
    import threading

    from wait_helpers import wait_until

    import dspex
    from dspex.actors import current_run

    main = threading.main_thread().ident
    assert threading.current_thread() is threading.main_thread() and main is not None
    seen: dict[str, bool] = {}
    runs: list[Any] = []
    finished = threading.Event()

    class Waits(dspex.Module):
        def forward(self, question: str) -> dspex.Prediction:
            run = current_run()
            assert run is not None
            if question == "q0":
                signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C reaches the main thread
            seen[question] = run.cancelled.wait(30)  # ... which cancels this example's run
            run.check_deadline()
            return dspex.Prediction(answer="A")

    class EvaluatesInside(dspex.Module):
        def forward(self) -> dspex.Prediction:
            runs.append(current_run())
            devset = [
                dspex.Example(question=f"q{i}", answer="A").with_inputs("question")
                for i in range(2)
            ]
            try:
                dspex.Evaluate(devset=devset, metric=lambda e, p: True, num_threads=2)(Waits())
            finally:
                finished.set()
            return dspex.Prediction()

    # The top-level run executes in the main thread (a light run), so Ctrl-C
    # lands inside it, as in DSPy: its evaluation stops and Ctrl-C goes on.
    with pytest.raises(KeyboardInterrupt):
        EvaluatesInside()()
    assert finished.wait(30)
    wait_until(lambda: "q0" in seen, what="the interrupted example saw its cancel")
    assert seen["q0"] is True and all(seen.values())  # (q1 may not have started)
    assert runs[0] is not None and runs[0].cancelled.is_set()  # the run itself was cancelled
