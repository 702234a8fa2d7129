"""``dspex demo``: its bundled data, its optimizer step and the whole run.

The building blocks and the full sequence run on a scripted LM that labels
each known review, rightly or wrongly depending on whether the prompt
carries demos, so both outcomes of "serve the better classifier" are
checked in milliseconds. One test runs the real ``dspex demo`` command on
the embedded model, cold (its own empty cache) and then warm.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

import dspex
from dspex import _demo
from dspex.programs import settings as program_settings
from dspex.testing import DummyLM
from dspex.testing._dummy_lm import format_chat_answer, format_json_answer

ROOT = Path(__file__).resolve().parents[1]
DEV = _demo.load_reviews()
TRAIN = _demo.load_reviews(_demo.TRAIN_FILE)
FLIP = {"positive": "negative", "negative": "positive"}


class ReviewLM(DummyLM):
    """Labels every bundled review correctly, except the ones it is told to miss.

    ``zero_shot_misses`` get the wrong label when the prompt has no demos,
    ``few_shot_misses`` when it has some (ChatAdapter puts each demo between
    the system message and the final user message).
    """

    def __init__(
        self, *, zero_shot_misses: Iterable[str] = (), few_shot_misses: Iterable[str] = ()
    ) -> None:
        super().__init__()
        self.labels = {ex.review: ex.sentiment for ex in [*DEV, *TRAIN]}
        self.labels.update(dict(_demo.SAMPLES))
        self.zero_shot_misses = set(zero_shot_misses)
        self.few_shot_misses = set(few_shot_misses)

    def _answer(self, messages: Sequence[Mapping[str, Any]], as_json: bool) -> str:
        last = str(messages[-1]["content"])
        review = max((r for r in self.labels if r in last), key=len)
        misses = self.few_shot_misses if len(messages) > 2 else self.zero_shot_misses
        label = self.labels[review]
        answer = {"sentiment": FLIP[label] if review in misses else label}
        return format_json_answer(answer) if as_json else format_chat_answer(answer)


@pytest.fixture
def restore_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``run_with`` configures its LM globally (as ``dspex.start`` does); undo that."""
    monkeypatch.setenv("DSPEX_CACHE__ENABLED", "false")
    saved = dict(program_settings.config)
    yield
    program_settings.reset()
    program_settings.configure(**saved)


# -- the bundled data -----------------------------------------------------------------


def test_dev_and_training_reviews_are_balanced_and_disjoint() -> None:
    for data, low, high in ((DEV, 48, 48), (TRAIN, 12, 16)):
        labels = [ex.sentiment for ex in data]
        assert low <= len(data) <= high
        assert labels.count("positive") == labels.count("negative") == len(data) // 2
        assert all(set(ex.keys()) == {"review", "sentiment"} for ex in data)
        assert all(set(ex.inputs().keys()) == {"review"} for ex in data)
    dev = {ex.review.lower() for ex in DEV}
    samples = {text.lower() for text, _ in _demo.SAMPLES}
    train = [ex.review.lower() for ex in TRAIN]
    assert len(set(train)) == len(train)
    assert not (set(train) & (dev | samples))


def test_both_datasets_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["dspex"]
    for name in (_demo.DEV_FILE, _demo.TRAIN_FILE):
        assert (ROOT / "dspex" / "data" / name).is_file()
        assert any(fnmatch(f"data/{name}", pattern) for pattern in patterns), patterns


# -- the building blocks ------------------------------------------------------------------


def test_compile_keeps_only_the_teacher_runs_the_metric_accepts() -> None:
    # The teacher (the classifier holding 2 labeled demos) gets TRAIN[1] wrong,
    # so the metric rejects it and the next review fills the second slot.
    lm = ReviewLM(few_shot_misses={TRAIN[1].review})
    student = dspex.Predict(_demo.Sentiment)
    with dspex.context(lm=lm):
        compiled = _demo.compile_classifier(student, TRAIN, demos=2)
    assert (compiled.tried, compiled.accepted, compiled.errors) == (3, 2, 0)
    assert [d.review for d in compiled.demos] == [TRAIN[0].review, TRAIN[2].review]
    assert all(d.get("augmented") for d in compiled.demos)
    assert compiled.program._compiled
    assert student.predictors()[0].demos == []  # the student itself is left alone


def test_choose_serves_the_compiled_classifier_only_when_it_wins_beyond_noise() -> None:
    assert _demo.choose(91.7, 95.8, 48)[0] == "compiled"  # two reviews better
    which, why = _demo.choose(95.8, 97.9, 48)  # one review better: noise
    assert which == "zero-shot"
    assert "single review" in why
    which, why = _demo.choose(95.8, 95.8, 48)
    assert which == "zero-shot"
    assert "same score" in why
    which, why = _demo.choose(95.8, 50.0, 48)
    assert which == "zero-shot"
    assert "50.0% vs 95.8%" in why


# -- the whole sequence on a scripted LM ----------------------------------------------------


def _served_calls(lm: ReviewLM) -> list[list[Any]]:
    """The prompts of the four messages sent to the served actor (the last calls)."""
    return [entry["messages"] for entry in lm.history[-len(_demo.SAMPLES) :]]


def test_demo_serves_the_compiled_classifier_when_the_demos_help(
    restore_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    negatives = [ex.review for ex in DEV if ex.sentiment == "negative"][:4]
    lm = ReviewLM(zero_shot_misses=negatives)
    assert _demo.run_with(lm, num_threads=2) == 0
    out = capsys.readouterr().out
    assert "zero-shot   91.7%  (44/48)" in out
    assert "compiled   100.0%  (48/48, 2 demos)" in out
    assert "teacher runs: 2 training reviews, 2 accepted by the metric, 0 rejected" in out
    assert "serving the compiled classifier: it scored higher" in out
    assert "server:sentiment (ProgramServer)" in out
    assert "expected" not in out  # every sample answered right
    assert all(len(messages) == 6 for messages in _served_calls(lm))  # system, 2 demos, input
    _check_serve_command(out, demos=2)


def _check_serve_command(out: str, *, demos: int) -> None:
    """The demo's last line is a ``dspex serve`` command that loads the served classifier."""
    from dspex.serve import load_programs

    command = out.strip().splitlines()[-1]
    found = re.fullmatch(r"dspex serve (\S+) --state (\S+) --name (\w+)", command)
    assert found, command
    target, state, name = found.groups()
    programs = load_programs(target, state=state, name=name)
    assert list(programs) == ["sentiment"]
    program = programs["sentiment"]
    assert len(program.demos) == demos
    assert program.lm.model == "local/smollm2"  # served on the demo's model, not the test's
    assert list(program.signature.output_fields) == ["sentiment"]


def test_demo_keeps_the_zero_shot_classifier_when_the_demos_hurt(
    restore_settings: None, capsys: pytest.CaptureFixture[str]
) -> None:
    lm = ReviewLM(few_shot_misses=[ex.review for ex in DEV if ex.sentiment == "positive"])
    assert _demo.run_with(lm, num_threads=2) == 0
    out = capsys.readouterr().out
    assert "zero-shot  100.0%  (48/48)" in out
    assert "compiled    50.0%  (24/48, 2 demos)" in out
    assert "serving the zero-shot classifier: the demos made this small model worse" in out
    assert all(len(messages) == 2 for messages in _served_calls(lm))  # no demos
    _check_serve_command(out, demos=0)


# -- the real command -------------------------------------------------------------------------

_SCORE = re.compile(r"^  (zero-shot|compiled)\s+([\d.]+)%", re.M)
_COUNTED = re.compile(r"^  (zero-shot|compiled)\s+([\d.]+)%  \((\d+)/(\d+)", re.M)


def _demo_command(cache_dir: Path) -> str:
    env = {**os.environ, "DSPEX_CACHE__DIR": str(cache_dir)}
    env.pop("DSPEX_CACHE__ENABLED", None)
    done = subprocess.run(
        [sys.executable, "-m", "dspex.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.local_model
@pytest.mark.timeout(450)
def test_dspex_demo_on_the_real_model_cold_then_warm(tmp_path: Path) -> None:
    cold = _demo_command(tmp_path)
    scores = {name: float(value) for name, value in _SCORE.findall(cold)}
    assert scores.keys() == {"zero-shot", "compiled"}
    # Each score is the share of the 48 reviews it counts; how high the real
    # model scores is a figure in bench/local_accuracy.py (measured 95.8%).
    counted = {name: (int(right), int(of)) for name, _, right, of in _COUNTED.findall(cold)}
    assert counted.keys() == scores.keys()
    for name, (right, of) in counted.items():
        assert of == 48 and 0 <= right <= 48
        assert scores[name] == pytest.approx(100 * right / of, abs=0.051)  # shown to .1
    assert re.search(r"teacher runs: \d+ training reviews, \d+ accepted", cold)
    which, why = _demo.choose(scores["zero-shot"], scores["compiled"], 48)
    assert f"serving the {which} classifier: {why}" in cold
    assert sum(f"<-  {text}" in cold for text, _ in _demo.SAMPLES) == len(_demo.SAMPLES)
    assert "server:sentiment (ProgramServer) alive" in cold
    assert "cache hit rate 0%" in cold

    warm = _demo_command(tmp_path)  # every answer now comes from the disk cache
    assert "cache hit rate 100%" in warm
    assert dict(_SCORE.findall(warm)) == dict(_SCORE.findall(cold))
