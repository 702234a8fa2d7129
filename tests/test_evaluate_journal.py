"""Evaluate's journal: written line by line, resumed after a crash, checked against the devset."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from dspex.errors import UsageError
from dspex.programs import Evaluate, Example, Module, Prediction
from dspex.programs._evaluate_journal import Journal, example_hash


def make_devset(n: int, answer: str = "A") -> list[Example]:
    return [
        Example(question=f"q{i}", answer=f"{answer}{i}").with_inputs("question") for i in range(n)
    ]


def exact(example: Any, prediction: Any) -> bool:
    return bool(example.answer == prediction.answer)


class Counting(Module):
    """Answers ``A<i>``, counting calls; ``fail`` lists indexes that raise."""

    def __init__(self, fail: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.fail = fail
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def forward(self, question: str) -> Prediction:
        i = int(question[1:])
        with self.lock:
            self.calls.append(i)
        if i in self.fail:
            raise ValueError(f"cannot answer {i}")
        return Prediction(answer=f"A{i}", note={"len": i})


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def interrupt_after(n: int) -> Any:
    """A metric that raises KeyboardInterrupt on its (n+1)-th call (stands for Ctrl-C)."""
    calls = 0

    def metric(example: Any, prediction: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls > n:
            raise KeyboardInterrupt
        return exact(example, prediction)

    return metric


def test_each_finished_example_is_on_disk_while_the_run_continues(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    reached, release = threading.Event(), threading.Event()

    class Gated(Counting):
        def forward(self, question: str) -> Prediction:
            if question == "q3":
                reached.set()
                assert release.wait(10)
            return super().forward(question)

    box: dict[str, Any] = {}

    def run() -> None:
        box["result"] = Evaluate(devset=make_devset(5), metric=exact, num_threads=1)(
            Gated(), journal=journal
        )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert reached.wait(10)
        # One worker: example 3 starts only after 0..2 were recorded.
        lines = read_lines(journal)
        assert [line["index"] for line in lines] == [0, 1, 2]
        assert lines[1] == {
            "index": 1,
            "hash": example_hash(make_devset(5)[1]),
            "score": True,
            "prediction": {"answer": "A1", "note": {"len": 1}},
            "error": None,
        }
    finally:
        release.set()
        thread.join(10)
    assert not thread.is_alive()
    assert box["result"].score == 100.0
    assert [line["index"] for line in read_lines(journal)] == [0, 1, 2, 3, 4]


def test_resume_skips_finished_examples_and_includes_them(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    devset = make_devset(10)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C raises, as in DSPy, after the journal
        Evaluate(devset=devset, metric=interrupt_after(4), num_threads=1, journal=journal)(
            Counting()
        )
    assert [line["index"] for line in read_lines(journal)] == [0, 1, 2, 3]

    program = Counting()
    result = Evaluate(devset=devset, metric=exact, num_threads=3, journal=journal)(program)
    assert sorted(program.calls) == [4, 5, 6, 7, 8, 9]
    assert result.resumed == 4
    assert result.score == 100.0
    assert [ex for ex, _, _ in result.results] == devset
    restored = result.results[1][1]
    assert isinstance(restored, Prediction)
    assert restored.answer == "A1" and restored.note == {"len": 1}
    assert len(read_lines(journal)) == 10

    again = Counting()
    assert Evaluate(devset=devset, metric=exact, journal=journal)(again).score == 100.0
    assert again.calls == []


def test_failed_examples_run_again_on_resume(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    devset = make_devset(4)
    first = Evaluate(devset=devset, metric=exact, journal=journal)(Counting(fail=(2,)))
    assert [index for index, _ in first.errors] == [2]
    recorded = {line["index"]: line["error"] for line in read_lines(journal)}
    assert recorded[0] is None
    assert recorded[2] is not None and "cannot answer 2" in recorded[2]

    program = Counting()
    result = Evaluate(devset=devset, metric=exact, journal=journal)(program)
    assert program.calls == [2]
    assert result.errors == [] and result.score == 100.0
    assert result.resumed == 3


def test_a_truncated_last_line_is_tolerated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "eval.jsonl"
    devset = make_devset(5)
    Evaluate(devset=devset, metric=exact, num_threads=1, journal=journal)(Counting())
    data = journal.read_bytes()
    journal.write_bytes(data[:-25])  # a crash in the middle of writing the last line

    program = Counting()
    with caplog.at_level(logging.WARNING, logger="dspex.programs"):
        result = Evaluate(devset=devset, metric=exact, journal=journal)(program)
    assert program.calls == [4]
    assert result.score == 100.0 and len(result.results) == 5
    assert any("incomplete last line" in r.getMessage() for r in caplog.records)
    assert sorted(line["index"] for line in read_lines(journal)) == [0, 1, 2, 3, 4]


def test_a_changed_devset_is_detected(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    Evaluate(devset=make_devset(3), metric=exact, journal=journal)(Counting())
    changed = make_devset(3)
    changed[1] = Example(question="q1", answer="other").with_inputs("question")
    with pytest.raises(UsageError, match=r"different devset: line \d records example 1"):
        Evaluate(devset=changed, metric=exact, journal=journal)(Counting())
    with pytest.raises(UsageError, match="the devset has only 2 examples"):
        Evaluate(devset=make_devset(2), metric=exact, journal=journal)(Counting())
    # Same records, other inputs: the program would see different inputs.
    other_inputs = [ex.with_inputs("question", "answer") for ex in make_devset(3)]
    with pytest.raises(UsageError, match="different devset"):
        Evaluate(devset=other_inputs, metric=exact, journal=journal)(Counting())


def test_garbage_before_the_last_line_is_an_error(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    Evaluate(devset=make_devset(3), metric=exact, journal=journal)(Counting())
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], "not json", *lines[1:]]) + "\n")
    with pytest.raises(UsageError, match="line 2 is not a journal record"):
        Evaluate(devset=make_devset(3), metric=exact, journal=journal)(Counting())


def test_a_journal_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    journal, entries = Journal.open(path, make_devset(2))
    try:
        assert entries == {}
        with pytest.raises(UsageError, match="in use by another running evaluation"):
            Journal.open(path, make_devset(2))
    finally:
        journal.close()
    second, _ = Journal.open(path, make_devset(2))
    second.close()


def test_example_hash_is_stable_and_sees_fields_and_inputs() -> None:
    a = Example(question="q", answer="a").with_inputs("question")
    same = Example(answer="a", question="q").with_inputs("question")
    assert example_hash(a) == example_hash(same)
    assert example_hash(a) != example_hash(a.copy(answer="b"))
    assert example_hash(a) != example_hash(a.with_inputs("question", "answer"))
    assert len(example_hash(Example(when=object()).with_inputs("when"))) == 64


def test_kill_9_loses_nothing_already_scored(tmp_path: Path) -> None:
    journal = tmp_path / "eval.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal
        from dspex.programs import Evaluate, Example, Module, Prediction

        class Echo(Module):
            def forward(self, question):
                return Prediction(answer="A" + question[1:])

        calls = 0
        def metric(example, prediction):
            global calls
            calls += 1
            if calls == 6:
                os.kill(os.getpid(), signal.SIGKILL)
            return example.answer == prediction.answer

        devset = [Example(question=f"q{{i}}", answer=f"A{{i}}").with_inputs("question")
                  for i in range(10)]
        Evaluate(devset=devset, metric=metric, num_threads=1, journal={str(journal)!r})(Echo())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()
    assert [line["index"] for line in read_lines(journal)] == [0, 1, 2, 3, 4]

    program = Counting()
    result = Evaluate(devset=make_devset(10), metric=exact, journal=journal)(program)
    assert sorted(program.calls) == [5, 6, 7, 8, 9]
    assert result.resumed == 5 and result.score == 100.0


def test_journal_path_must_be_a_writable_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        Evaluate(devset=make_devset(1), metric=exact, journal=tmp_path)(Counting())
    missing = tmp_path / "no" / "such" / "dir" / "eval.jsonl"
    with pytest.raises(UsageError, match="cannot be opened"):
        Evaluate(devset=make_devset(1), metric=exact, journal=missing)(Counting())
    assert not os.path.exists(missing)
