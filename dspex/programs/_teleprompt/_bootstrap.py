"""``BootstrapFewShot``: demos from the teacher's own successful runs, plus labeled ones.

DSPy's algorithm: run the teacher (by default a copy of the student holding
up to ``max_labeled_demos`` labeled demos) on the training examples in order,
with trace capture; when the metric accepts a run, every predictor call in
its trace becomes an augmented demo for that predictor. Stop once
``max_bootstrapped_demos`` examples are bootstrapped. Each predictor of a
reset copy of the student then gets its augmented demos, topped up with
labeled examples drawn from the rest of the trainset.

dspex runs the teacher on several examples at once, on the WorkerPool of a
coordinator actor (see ``_coordinator``), but accepts runs strictly in
trainset order: the demos are the ones a sequential loop would have picked,
whatever the thread timing. The price is some speculative teacher runs past
the last accepted example (at most ``num_threads - 1``), cancelled at their
next LM call once enough are accepted.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.actors._lm._budget import budget_error
from dspex.actors._program_run import current_run
from dspex.errors import UsageError
from dspex.programs._backend import resolve_backend
from dspex.programs._evaluate_engine import resolve_max_errors, resolve_num_threads
from dspex.programs._evaluate_progress import Progress, progress_enabled
from dspex.programs._settings import context, current_settings
from dspex.programs._teleprompt._attempt import Attempt, TeacherRuns, rollout_lm
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._checkpoint import (
    Journal,
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import coordinate
from dspex.programs._teleprompt._labeled import LabeledFewShot

__all__ = ["BootstrapFewShot", "check_options"]

logger = logging.getLogger("dspex.programs")


class BootstrapFewShot(Teleprompter):
    """Few-shot demos bootstrapped from the teacher's runs that pass ``metric``.

    ``metric(example, prediction, trace)`` decides; with ``metric_threshold``
    (when truthy) a numeric result must be ``>=`` it. ``teacher_settings``
    are ``dspex.context`` overrides for the teacher's runs (e.g. ``lm=``).
    ``max_rounds > 1`` retries a rejected example with a fresh rollout of the
    LM at temperature 1.0. ``max_errors`` (default: the ``max_errors``
    setting) failed teacher runs or metric calls re-raise the last error.

    dspex additions (keyword-only): ``num_threads`` (default: the
    ``num_threads`` setting) teacher runs at once, and ``timeout`` seconds
    per training example (cooperative, checked between LM calls).
    """

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        metric: Callable[..., Any] | None = None,
        metric_threshold: float | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: float | None = None,
        *,
        num_threads: int | None = None,
        timeout: float | None = None,
    ) -> None:
        where = type(self).__name__
        check_options(
            where,
            metric=metric,
            metric_threshold=metric_threshold,
            teacher_settings=teacher_settings,
            max_errors=max_errors,
            timeout=timeout,
        )
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.max_bootstrapped_demos = check_count(
            where, "max_bootstrapped_demos", max_bootstrapped_demos, 0
        )
        self.max_labeled_demos = check_count(where, "max_labeled_demos", max_labeled_demos, 0)
        self.max_rounds = check_count(where, "max_rounds", max_rounds, 1)
        self.max_errors = max_errors
        self.num_threads = num_threads
        self.timeout = timeout
        self.error_count = 0
        # Set by BootstrapFewShotWithRandomSearch to journal its candidates' traces.
        self._journal: Journal | None = None
        self._unit_prefix = ""

    def compile(  # type: ignore[override]  # DSPy's signature: no valset
        self,
        student: Any,
        *,
        teacher: Any = None,
        trainset: Sequence[Any],
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """A compiled copy of ``student`` (``_compiled = True``) holding the demos.

        With ``checkpoint`` (a directory), each training example's finished
        teacher runs are journaled there; rerunning the same compile resumes.
        """
        self.trainset = check_trainset(trainset, f"{type(self).__name__}.compile", need_inputs=True)
        self.error_count = 0
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "teacher": "none" if teacher is None else fingerprint_program(teacher),
                "trainset": fingerprint_examples(self.trainset),
                "settings": digest(self.checkpoint_settings()),
            },
        )
        if journal is not None:
            self._journal, self._unit_prefix = journal, ""
        try:
            self._prepare_student_and_teacher(student, teacher)
            self._prepare_predictor_mappings()
            self._bootstrap()
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
        self.student = self._train()
        self.student._compiled = True
        return self.student

    def checkpoint_settings(self) -> dict[str, Any]:
        """What a checkpoint must agree on (functions and LMs by name)."""
        return {
            "metric": _name_of(self.metric),
            "metric_threshold": self.metric_threshold,
            "max_bootstrapped_demos": self.max_bootstrapped_demos,
            "max_labeled_demos": self.max_labeled_demos,
            "max_rounds": self.max_rounds,
            "teacher_settings": {k: _name_of(v) for k, v in self.teacher_settings.items()},
        }

    # -- preparation ------------------------------------------------------------------

    def _prepare_student_and_teacher(self, student: Any, teacher: Any) -> None:
        self.student = student.reset_copy()
        if getattr(self.student, "_compiled", False):
            raise UsageError(
                f"{type(self).__name__}.compile: the student is already compiled; pass an "
                "uncompiled program (a new instance), or use the compiled one as teacher="
            )
        # The teacher is a full copy (demos kept): DSPy changed from a reset copy in 2024.
        self.teacher = teacher.deepcopy() if teacher is not None else student.deepcopy()
        if self.max_labeled_demos and not getattr(self.teacher, "_compiled", False):
            labeled = LabeledFewShot(k=self.max_labeled_demos)
            self.teacher = labeled.compile(self.teacher.reset_copy(), trainset=self.trainset)

    def _prepare_predictor_mappings(self) -> None:
        where = f"{type(self).__name__}.compile"
        student = self.student.named_predictors()
        teacher = self.teacher.named_predictors()
        if len(student) != len(teacher):
            raise UsageError(
                f"{where}: the student has {len(student)} predictors and the teacher "
                f"{len(teacher)}; the teacher must have the student's structure"
            )
        for (name, mine), (other, theirs) in zip(student, teacher, strict=True):
            if name != other:
                raise UsageError(
                    f"{where}: student predictor {name!r} faces teacher predictor {other!r}; "
                    "the teacher must have the student's structure (same attribute names)"
                )
            equals = getattr(mine.signature, "equals", None)
            same = (
                equals(theirs.signature) if callable(equals) else mine.signature == theirs.signature
            )
            if not same:
                raise UsageError(
                    f"{where}: predictor {name!r} has signature {mine.signature!r} in the "
                    f"student but {theirs.signature!r} in the teacher; they must match"
                )
            if mine is theirs:
                raise UsageError(
                    f"{where}: predictor {name!r} is the same object in student and teacher; "
                    "pass a separate teacher program"
                )
        self.predictor_names = [name for name, _ in student]

    # -- bootstrapping ----------------------------------------------------------------

    def _bootstrap(self) -> None:
        settings = current_settings()
        limit = resolve_max_errors(self.max_errors, settings)
        self.name2traces: dict[str, list[Any]] = {name: [] for name in self.predictor_names}
        bootstrapped: set[int] = set()
        attempts = examined = 0
        wanted = self.max_bootstrapped_demos
        if wanted > 0 and self.trainset:
            threads = resolve_num_threads(self.num_threads, settings)
            runs: Callable[[Any], list[Attempt]]
            if resolve_backend() == "ray":
                from dspex.programs._ray._bodies import teacher_body

                runs = teacher_body(  # ships the teacher and metric now, or raises
                    self.teacher,
                    metric=self.metric,
                    metric_threshold=self.metric_threshold,
                    teacher_settings=self.teacher_settings,
                    max_rounds=self.max_rounds,
                )
            else:
                runs = TeacherRuns(
                    self.teacher,
                    metric=self.metric,
                    metric_threshold=self.metric_threshold,
                    teacher_settings=self.teacher_settings,
                    max_rounds=self.max_rounds,
                    rollout_lms=self._rollout_lms(),
                )
            label = type(self).__name__
            progress = Progress(len(self.trainset), enabled=progress_enabled(None), scored=False)
            try:
                with (
                    coordinate(label, num_threads=threads, work=len(self.trainset)) as crew,
                    crew.stream(
                        self._journaled(runs),
                        list(enumerate(self.trainset)),
                        num_threads=threads,
                        timeout=self.timeout,
                        error_of=TeacherRuns.failure,
                    ) as results,
                ):
                    for result in results:
                        examined += 1
                        progress.add()
                        if not result.ok and isinstance(result.error, UsageError):
                            raise result.error  # a checkpoint that diverged
                        tried = result.value if result.ok else [Attempt(0, None, result.error)]
                        if any(budget_error(a.error) for a in tried):
                            break  # a budget ran out: keep what was bootstrapped (docs/cost.md)
                        for attempt in tried:
                            attempts += 1
                            if attempt.error is not None:
                                self._count_error(attempt.error, result.index, limit)
                            elif attempt.demos is not None:
                                for name, demos in attempt.demos.items():
                                    self.name2traces[name].extend(demos)
                                bootstrapped.add(result.index)
                                break
                        if len(bootstrapped) >= wanted:
                            break
            finally:
                progress.close()
        logger.info(
            "Bootstrapped %d full traces after %d examples for up to %d rounds, amounting to "
            "%d attempts.",
            len(bootstrapped),
            examined,
            self.max_rounds,
            attempts,
        )
        # The examples not bootstrapped, in a fixed shuffle: the labeled demo pool.
        self.validation = [x for i, x in enumerate(self.trainset) if i not in bootstrapped]
        random.Random(0).shuffle(self.validation)

    def _journaled(
        self, runs: Callable[[Any], list[Attempt]]
    ) -> Callable[[tuple[int, Any]], list[Attempt]]:
        """``runs`` on ``(index, example)``, answered from the journal when it holds the unit.

        Runs in pool workers. A run that failed or was cancelled is not
        recorded: a resume runs it again (its finished LM calls cached).
        """
        journal, prefix = self._journal, self._unit_prefix

        def body(item: tuple[int, Any]) -> list[Attempt]:
            index, example = item
            if journal is None:
                return runs(example)
            unit, ask = f"{prefix}trace:{index}", digest(sorted(dict(example).items()))
            found, saved = journal.replay(unit, ask)
            if found:
                return [Attempt(round_idx, demos, None) for round_idx, demos in saved]
            attempts = runs(example)
            run = current_run()
            cancelled = run is not None and run.cancelled.is_set()
            if not cancelled and all(a.error is None for a in attempts):
                journal.record(unit, ask, [(a.round, a.demos) for a in attempts])
            return attempts

        return body

    def _rollout_lms(self) -> dict[int, Any]:
        """The LM of each retry round (from the settings the teacher runs under)."""
        if self.max_rounds <= 1:
            return {}
        with context(**self.teacher_settings):
            lm = current_settings().get("lm")
        if lm is None:  # predictors bring their own LM: retries rerun as they are
            return {}
        return {round_idx: rollout_lm(lm, round_idx) for round_idx in range(1, self.max_rounds)}

    def _count_error(self, error: BaseException, index: int, limit: float) -> None:
        self.error_count += 1
        name = type(self).__name__
        if self.error_count >= limit:
            error.add_note(
                f"{name}: {self.error_count} teacher runs failed, reaching max_errors={limit}; "
                "fix the cause or raise max_errors (or the max_errors setting)"
            )
            raise error
        logger.error(
            "%s: the teacher run on trainset[%d] failed (%d of max_errors=%s): %s: %s",
            name,
            index,
            self.error_count,
            limit,
            type(error).__name__,
            error,
        )

    # -- the compiled student ------------------------------------------------------------

    def _train(self) -> Any:
        rng = random.Random(0)
        raw_demos = self.validation
        for name, predictor in self.student.named_predictors():
            augmented = self.name2traces[name][: self.max_bootstrapped_demos]
            size = max(0, min(self.max_labeled_demos - len(augmented), len(raw_demos)))
            # Each predictor draws from the previous one's draw, as DSPy does.
            raw_demos = rng.sample(raw_demos, size)
            predictor.demos = augmented + raw_demos
        return self.student


def _name_of(value: Any) -> Any:
    """A function, LM or plain value as a checkpoint fingerprint can show it."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    model = getattr(value, "model", None)
    if isinstance(model, str):
        return model
    return getattr(value, "__qualname__", type(value).__qualname__)


def check_options(
    where: str,
    *,
    metric: Any,
    metric_threshold: Any,
    teacher_settings: Any,
    max_errors: Any,
    timeout: Any,
) -> None:
    """Validate the options BootstrapFewShot and its random search share."""
    if metric is not None and not callable(metric):
        raise UsageError(
            f"{where}(metric={metric!r}): must be a function metric(example, prediction, "
            "trace=None) returning a bool or a number"
        )
    if metric_threshold is not None and (
        isinstance(metric_threshold, bool) or not isinstance(metric_threshold, int | float)
    ):
        raise UsageError(f"{where}(metric_threshold={metric_threshold!r}): must be a number")
    if teacher_settings is not None and not isinstance(teacher_settings, Mapping):
        raise UsageError(
            f"{where}(teacher_settings={teacher_settings!r}): must be a dict of dspex.context "
            "overrides, e.g. {'lm': dspex.LM('openai/gpt-4o')}"
        )
    if max_errors is not None and (
        isinstance(max_errors, bool) or not isinstance(max_errors, int | float) or max_errors < 0
    ):
        raise UsageError(
            f"{where}(max_errors={max_errors!r}): must be a number >= 0, or None for the "
            "max_errors setting"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise UsageError(
            f"{where}(timeout={timeout!r}): must be seconds > 0 per training example, or None"
        )
