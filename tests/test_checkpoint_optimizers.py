"""Checkpoints of the other optimizers: killed half-way, resumed to the same program."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from checkpoint_child import bootstrap_metric, rows, whole_then_cut

import dspex
from dspex.testing import DummyLM


@pytest.mark.parametrize("which", ["bootstrap", "random_search", "copro", "mipro"])
def test_a_killed_compile_resumes_to_the_same_program(which: str, tmp_path: Path) -> None:
    run = whole_then_cut(which, tmp_path)
    assert run["whole"] >= 20  # big enough for "half-way" to mean something
    # The finished units came from the journal (a random search's finished
    # candidates stand for their bootstraps' traces, so fewer units are touched).
    assert 0 < run["replayed"] and run["recorded"] < run["units"]
    # With 2 threads, each bootstrap (3 in the random search, else at most 1) may finish one
    # speculative run past its last accepted example in one run and cancel it in the other.
    slack = {"bootstrap": 1, "random_search": 3, "copro": 0, "mipro": 1}[which]
    assert run["replayed"] + run["recorded"] <= run["units"] + slack
    assert run["result"] == run["expected"]
    assert run["total"] <= run["whole"] * 1.1, (which, run["total"], run["whole"])


def examples(n: int) -> list[dspex.Example]:
    return [dspex.Example(question=q, answer=a).with_inputs("question") for q, a in rows(n)]


def test_labeled_fewshot_replays_its_choice_and_refuses_other_settings(tmp_path: Path) -> None:
    program = dspex.Predict("question -> answer")
    first = dspex.LabeledFewShot(k=3).compile(program, trainset=examples(10), checkpoint=tmp_path)
    assert (tmp_path / "journal.jsonl").read_text().count("\n") == 1
    again = dspex.LabeledFewShot(k=3).compile(program, trainset=examples(10), checkpoint=tmp_path)
    assert again.dump_state() == first.dump_state()
    assert (
        first.dump_state()
        == dspex.LabeledFewShot(k=3).compile(program, trainset=examples(10)).dump_state()
    )  # the same demos as without a checkpoint
    with pytest.raises(dspex.UsageError, match="settings differs"):
        dspex.LabeledFewShot(k=2).compile(program, trainset=examples(10), checkpoint=tmp_path)


def test_bootstrap_refuses_a_checkpoint_of_another_trainset(tmp_path: Path) -> None:
    lm = DummyLM([{"answer": q.lower()} for q, _ in rows(7)])
    with dspex.context(lm=lm):
        optimizer = dspex.BootstrapFewShot(metric=bootstrap_metric, max_bootstrapped_demos=1)
        compiled = optimizer.compile(
            dspex.Predict("question -> answer"), trainset=examples(7), checkpoint=tmp_path
        )
    assert [d["question"] for d in compiled.demos[:1]] == ["apple6"]
    with pytest.raises(dspex.UsageError, match="trainset differs"):
        optimizer.compile(
            dspex.Predict("question -> answer"), trainset=examples(8), checkpoint=tmp_path
        )
    with pytest.raises(dspex.UsageError, match="another optimizer"):
        dspex.LabeledFewShot().compile(
            dspex.Predict("question -> answer"), trainset=examples(7), checkpoint=tmp_path
        )


def test_the_compile_bar_counts_units_and_shows_the_best_score() -> None:
    from dspex.programs._teleprompt._progress import CompileBar

    out = io.StringIO()
    with CompileBar(3, "trials", enabled=True, file=out) as bar:
        bar.step(0.5)
        bar.step(0.25)  # lower: the best stays
        bar.step()
    text = out.getvalue()
    assert "trials" in text and "3/3" in text and "best=0.500" in text
    assert "best=0.250" not in text
    silent = io.StringIO()
    with CompileBar(3, "trials", file=silent) as bar:  # not a terminal: no bar
        bar.step(1.0)
    assert silent.getvalue() == "" and bar.best == 1.0


@pytest.mark.parametrize("which", ["BootstrapFewShotWithRandomSearch", "COPRO", "MIPROv2"])
def test_each_optimizer_checks_its_checkpoint_before_any_work(which: str, tmp_path: Path) -> None:
    from dspex.programs._teleprompt._checkpoint import Journal

    # A checkpoint of another compile of this optimizer: every fingerprint differs.
    Journal(tmp_path, optimizer=which, fingerprint={"program": "x", "trainset": "x"}).close()
    metric = bootstrap_metric
    lm = DummyLM([{"answer": "never asked"}])
    student = dspex.Predict("question -> answer")
    data = examples(8)
    with dspex.context(lm=lm), pytest.raises(dspex.UsageError, match=r"program, .*trainset"):
        if which == "COPRO":
            dspex.COPRO(metric=metric, breadth=2, depth=1).compile(
                student, trainset=data, checkpoint=tmp_path
            )
        elif which == "MIPROv2":
            dspex.MIPROv2(metric=metric, auto=None, num_candidates=2).compile(
                student, trainset=data, valset=data, num_trials=2, minibatch=False,
                requires_permission_to_run=False, checkpoint=tmp_path,
            )  # fmt: skip
        else:
            dspex.BootstrapFewShotWithRandomSearch(metric=metric).compile(
                student, trainset=data, checkpoint=tmp_path
            )
    assert lm.history == []  # refused before any LM call
