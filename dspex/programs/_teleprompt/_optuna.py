"""``BootstrapFewShotWithOptuna``: optuna picks one bootstrapped demo per predictor.

DSPy's recipe: one BootstrapFewShot run (up to ``max_demos`` demos per
predictor), then ``num_candidate_programs`` optuna trials. Each trial gives
every predictor of a fresh copy of the student exactly one of those demos
(the index is the trial's integer parameter ``demo_index_for_<name>``) and
scores it on the valset with :class:`~dspex.Evaluate`; the best trial's
program is returned. optuna is an optional dependency (``dspex[optuna]``).

The compile is one coordinator: the bootstrap runs on its pool, and each
evaluation's pool is its child. Trials run one after another, in the calling
thread, as optuna's ``study.optimize`` does by default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._evaluate import Evaluate
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._settings import current_settings
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._bootstrap import BootstrapFewShot
from dspex.programs._teleprompt._coordinator import coordinate

__all__ = ["BootstrapFewShotWithOptuna"]

logger = logging.getLogger("dspex.programs")


def _import_optuna() -> Any:
    try:
        import optuna
    except ModuleNotFoundError as exc:
        if exc.name == "optuna":
            raise ImportError(
                "BootstrapFewShotWithOptuna needs the optional dependency 'optuna': "
                "pip install 'dspex[optuna]' (or pip install optuna)"
            ) from exc
        raise
    return optuna


class BootstrapFewShotWithOptuna(Teleprompter):
    """DSPy's ``BootstrapFewShotWithOptuna``: ``compile(student, max_demos=4, trainset=...)``.

    ``seed`` (dspex) seeds optuna's TPE sampler, so a run can be repeated;
    None keeps optuna's random default, as DSPy.
    """

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        metric: Callable[..., Any],
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        num_candidate_programs: int = 16,
        num_threads: int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        where = type(self).__name__
        if metric is None or not callable(metric):
            raise UsageError(
                f"{where}(metric={metric!r}): a metric is required to score the trials, e.g. "
                "metric=dspex.answer_exact_match"
            )
        self.metric = metric
        self.teacher_settings: dict[str, Any] = dict(teacher_settings or {})
        self.max_rounds = check_count(where, "max_rounds", max_rounds, 1)
        self.num_threads = num_threads
        self.min_num_samples = 1
        self.max_num_samples = check_count(
            where, "max_bootstrapped_demos", max_bootstrapped_demos, 0
        )
        self.num_candidate_sets = check_count(
            where, "num_candidate_programs", num_candidate_programs, 1
        )
        self.max_labeled_demos = check_count(where, "max_labeled_demos", max_labeled_demos, 0)
        self.seed = seed
        logger.info(
            "Going to sample between %d and %d traces per predictor; will train %d candidate sets.",
            self.min_num_samples,
            self.max_num_samples,
            self.num_candidate_sets,
        )

    def compile(  # type: ignore[override]  # DSPy's signature
        self,
        student: Any,
        *,
        teacher: Any = None,
        max_demos: int,
        trainset: Sequence[Any],
        valset: Sequence[Any] | None = None,
    ) -> Any:
        """The best trial's program (one demo per predictor)."""
        optuna = _import_optuna()  # before any work: a missing extra fails fast
        where = f"{type(self).__name__}.compile"
        check_count(where, "max_demos", max_demos, 1)
        self.trainset = check_trainset(trainset, where, need_inputs=True)
        self.valset = (
            check_trainset(valset, where, need_inputs=True) if valset else list(self.trainset)
        )
        self.student = student.reset_copy()
        self.teacher = teacher.deepcopy() if teacher is not None else student.reset_copy()
        threads = resolve_num_threads(self.num_threads, current_settings())
        with coordinate(type(self).__name__, num_threads=threads, work=len(self.trainset)):
            bootstrap = BootstrapFewShot(
                metric=self.metric,
                max_bootstrapped_demos=max_demos,
                max_labeled_demos=self.max_labeled_demos,
                teacher_settings=self.teacher_settings,
                max_rounds=self.max_rounds,
                num_threads=self.num_threads,
            )
            self.compiled_teleprompter = bootstrap.compile(
                self.student, teacher=self.teacher, trainset=self.trainset
            )
            study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed)
            )
            study.optimize(self.objective, n_trials=self.num_candidate_sets)
        best_program = study.best_trial.user_attrs["program"]
        logger.info("Best score: %s", study.best_value)
        return best_program

    def objective(self, trial: Any) -> float:
        """One optuna trial: a copy of the student with one chosen demo per predictor."""
        program = self.student.reset_copy()
        for (name, compiled), (_, predictor) in zip(
            self.compiled_teleprompter.named_predictors(),
            program.named_predictors(),
            strict=True,
        ):
            demos = compiled.demos
            if not demos:  # nothing bootstrapped or labeled for it: it stays zero-shot
                continue
            index = trial.suggest_int(f"demo_index_for_{name}", 0, len(demos) - 1)
            predictor.demos = [demos[index]]
        evaluate = Evaluate(
            devset=self.valset,
            metric=self.metric,
            num_threads=self.num_threads,
            display_table=False,
            display_progress=False,
        )
        score = float(evaluate(program).score)
        trial.set_user_attr("program", program)
        return score
