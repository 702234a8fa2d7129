"""``BootstrapFewShotWithRandomSearch``: several candidate demo sets, the best on a valset.

DSPy's candidates, by seed: ``-3`` the zero-shot student, ``-2`` labeled demos
only, ``-1`` BootstrapFewShot on the trainset as given, and each seed ``>= 0``
BootstrapFewShot on the trainset shuffled with that seed and a random number
(1 to ``max_bootstrapped_demos``) of bootstrapped demos. Each is scored with
:class:`~dspex.Evaluate` on the valset; the best (the first, on ties) is
returned with every candidate in ``candidate_programs``, best first.

The whole search is one coordinator in the tree: the BootstrapFewShot runs
share its worker pool; each evaluation runs on Evaluate's own pool.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._evaluate import Evaluate
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._settings import current_settings
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._bootstrap import BootstrapFewShot, check_options
from dspex.programs._teleprompt._checkpoint import (
    Journal,
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import coordinate
from dspex.programs._teleprompt._labeled import LabeledFewShot
from dspex.programs._teleprompt._progress import CompileBar

__all__ = ["BootstrapFewShotWithRandomSearch"]

logger = logging.getLogger("dspex.programs")


class BootstrapFewShotWithRandomSearch(Teleprompter):
    """Random search over BootstrapFewShot demo sets (``dspy.BootstrapFewShotWithRandomSearch``).

    ``num_candidate_programs`` shuffled bootstraps are tried besides the three
    fixed candidates; ``stop_at_score`` (a percent, like Evaluate's score)
    ends the search early. ``num_threads`` and ``max_errors`` apply to the
    teacher runs and to each evaluation. ``timeout`` (dspex) limits each
    teacher run and each evaluated example, in seconds.
    """

    _journal: Journal | None = None
    """The compile's checkpoint journal, while a checkpointed compile runs."""

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        metric: Callable[..., Any],
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        max_errors: float | None = None,
        stop_at_score: float | None = None,
        metric_threshold: float | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        where = type(self).__name__
        if metric is None:
            raise UsageError(
                f"{where}(metric=None): a metric is required to score the candidates, e.g. "
                "metric=dspex.answer_exact_match"
            )
        check_options(
            where,
            metric=metric,
            metric_threshold=metric_threshold,
            teacher_settings=teacher_settings,
            max_errors=max_errors,
            timeout=timeout,
        )
        self.metric = metric
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.max_rounds = check_count(where, "max_rounds", max_rounds, 1)
        self.num_threads = num_threads
        self.stop_at_score = stop_at_score
        self.metric_threshold = metric_threshold
        self.min_num_samples = 1
        self.max_num_samples = check_count(
            where, "max_bootstrapped_demos", max_bootstrapped_demos, 0
        )
        self.max_errors = max_errors
        self.num_candidate_sets = check_count(
            where, "num_candidate_programs", num_candidate_programs, 0
        )
        self.max_labeled_demos = check_count(where, "max_labeled_demos", max_labeled_demos, 0)
        self.timeout = timeout
        logger.info(
            "Going to sample between %d and %d traces per predictor; will attempt to bootstrap "
            "%d candidate sets.",
            self.min_num_samples,
            self.max_num_samples,
            self.num_candidate_sets,
        )

    def compile(  # type: ignore[override]  # DSPy's signature
        self,
        student: Any,
        *,
        teacher: Any = None,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
        restrict: Container[int] | None = None,
        labeled_sample: bool = True,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The best candidate program, with ``candidate_programs`` attached.

        With ``checkpoint`` (a directory), each candidate's score and demos,
        and its bootstrap's teacher runs, are journaled there; rerunning the
        same compile resumes.
        """
        where = f"{type(self).__name__}.compile"
        if isinstance(restrict, Iterator):  # single use: the fingerprint would exhaust it
            restrict = frozenset(restrict)
        self.trainset = check_trainset(trainset, where, need_inputs=True)
        self.valset = (
            check_trainset(valset, where, need_inputs=True) if valset else list(self.trainset)
        )
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "teacher": "none" if teacher is None else fingerprint_program(teacher),
                "trainset": fingerprint_examples(self.trainset),
                "valset": fingerprint_examples(self.valset),
                "settings": digest(self._checkpoint_settings(restrict, labeled_sample)),
            },
        )
        self._journal = journal
        try:
            return self._search(student, teacher, restrict, labeled_sample)
        finally:
            if journal is not None:
                self._journal = None
                journal.close()
                logger.info(
                    "%s checkpoint: %d units replayed, %d recorded",
                    type(self).__name__,
                    journal.replayed,
                    journal.recorded,
                )

    def _checkpoint_settings(self, restrict: Any, labeled_sample: bool) -> dict[str, Any]:
        """What a checkpoint must agree on (functions and LMs by name)."""
        bootstrap = BootstrapFewShot(
            metric=self.metric,
            metric_threshold=self.metric_threshold,
            teacher_settings=self.teacher_settings,
            max_bootstrapped_demos=self.max_num_samples,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
        ).checkpoint_settings()
        return {
            **bootstrap,
            "num_candidate_programs": self.num_candidate_sets,
            "stop_at_score": self.stop_at_score,
            "restrict": None if restrict is None else sorted(restrict),
            "labeled_sample": labeled_sample,
        }

    def _search(self, student: Any, teacher: Any, restrict: Any, labeled_sample: bool) -> Any:
        where = f"{type(self).__name__}.compile"
        settings = current_settings()
        max_errors = self.max_errors if self.max_errors is not None else settings.get("max_errors")
        threads = resolve_num_threads(self.num_threads, settings)
        scores: list[float] = []
        score_data: list[dict[str, Any]] = []
        best: Any = None
        label = type(self).__name__
        seeds = [
            seed
            for seed in range(-3, self.num_candidate_sets)
            if restrict is None or seed in restrict
        ]
        with (
            coordinate(label, num_threads=threads, work=max(1, len(self.trainset))),
            CompileBar(len(seeds), f"{label} candidates") as bar,
        ):
            for seed in seeds:
                program, score, subscores = self._scored_candidate(
                    seed, student, teacher, labeled_sample, max_errors
                )
                bar.step(score)
                if not scores or score > max(scores):
                    logger.info("New best score: %s for seed %d", score, seed)
                    best = program
                scores.append(score)
                logger.info("Scores so far: %s; best so far: %s", scores, max(scores))
                score_data.append(
                    {"score": score, "subscores": subscores, "seed": seed, "program": program}
                )
                if self.stop_at_score is not None and score >= self.stop_at_score:
                    logger.info(
                        "Stopping early: score %s >= stop_at_score %s", score, self.stop_at_score
                    )
                    break
        if best is None:
            raise UsageError(
                f"{where}: no candidate was evaluated; restrict={restrict!r} excludes every seed "
                f"in range(-3, {self.num_candidate_sets})"
            )
        best.candidate_programs = sorted(score_data, key=lambda entry: entry["score"], reverse=True)
        logger.info("%d candidate programs found.", len(best.candidate_programs))
        return best

    def _scored_candidate(
        self, seed: int, student: Any, teacher: Any, labeled_sample: bool, max_errors: Any
    ) -> tuple[Any, float, list[Any]]:
        """The candidate of ``seed``, its valset score and per-example scores (journaled)."""
        unit, ask = f"candidate:{seed}", digest(seed)
        if self._journal is not None:
            found, saved = self._journal.replay(unit, ask)
            if found:
                program = student.reset_copy()
                for name, predictor in program.named_predictors():
                    predictor.demos = list(saved["demos"][name])
                if saved["compiled"]:
                    program._compiled = True
                return program, saved["score"], list(saved["subscores"])
        program = self._candidate(seed, student, teacher, labeled_sample, max_errors)
        evaluate = Evaluate(
            devset=self.valset,
            metric=self.metric,
            num_threads=self.num_threads,
            max_errors=max_errors,
            display_table=False,
            timeout=self.timeout,
        )
        result = evaluate(program)
        subscores = [row[2] for row in result.results]
        if self._journal is not None:
            self._journal.record(
                unit,
                ask,
                {
                    "demos": {n: list(p.demos) for n, p in program.named_predictors()},
                    "compiled": bool(getattr(program, "_compiled", False)),
                    "score": result.score,
                    "subscores": subscores,
                },
            )
        return program, result.score, subscores

    def _candidate(
        self,
        seed: int,
        student: Any,
        teacher: Any,
        labeled_sample: bool,
        max_errors: Any,
        *,
        rng: random.Random | None = None,
    ) -> Any:
        """The candidate program of ``seed`` (see the module docstring).

        ``rng`` is MIPROv2's way (DSPy's ``create_n_fewshot_demo_sets``): every
        shuffled candidate draws from that one generator instead of
        ``random.Random(seed)``, and seed ``-2`` is a labeled candidate only
        when ``max_labeled_demos > 0`` (else it is one more shuffled bootstrap).
        """
        trainset = list(self.trainset)
        if seed == -3:  # zero-shot
            return student.reset_copy()
        if seed == -2 and (rng is None or self.max_labeled_demos > 0):  # labeled demos only
            labeled = LabeledFewShot(k=self.max_labeled_demos)
            return labeled.compile(student, trainset=trainset, sample=labeled_sample)
        size = self.max_num_samples
        if seed != -1:  # a shuffled trainset and a random number of bootstrapped demos
            (rng or random.Random(seed)).shuffle(trainset)
            if self.max_num_samples >= self.min_num_samples:
                draw = rng or random.Random(seed)
                size = draw.randint(self.min_num_samples, self.max_num_samples)
        optimizer = BootstrapFewShot(
            metric=self.metric,
            metric_threshold=self.metric_threshold,
            teacher_settings=self.teacher_settings,
            max_bootstrapped_demos=size,
            max_labeled_demos=self.max_labeled_demos,
            max_rounds=self.max_rounds,
            max_errors=max_errors,
            num_threads=self.num_threads,
            timeout=self.timeout,
        )
        # The candidate's teacher runs go to the search's journal, under its seed.
        optimizer._journal, optimizer._unit_prefix = self._journal, f"seed{seed}:"
        return optimizer.compile(student, teacher=teacher, trainset=trainset)
