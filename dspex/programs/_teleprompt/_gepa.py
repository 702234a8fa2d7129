"""GEPA: reflective prompt evolution (the ``gepa`` package's engine, dspex's adapter).

The engine (``gepa.optimize``) keeps the candidate pool, its Pareto front
over the valset, the minibatch sampling and the merges. dspex supplies
:class:`~dspex.programs._teleprompt._gepa_adapter.DspexGEPAAdapter`: it runs
candidates on the compile's coordinator pool and proposes instructions with
the reflection LM through dspex's own LM clients.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal

from dspex.errors import UsageError
from dspex.programs._backend import resolve_backend
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._evaluate_progress import progress_enabled
from dspex.programs._settings import current_settings
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._checkpoint import (
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import coordinate
from dspex.programs._teleprompt._gepa_adapter import DspexGEPAAdapter
from dspex.programs._teleprompt._gepa_speculate import Speculator, check_speculate

__all__ = ["AUTO_RUN_SETTINGS", "GEPA", "DspyGEPAResult", "auto_budget"]

logger = logging.getLogger("dspex.programs")

AUTO_RUN_SETTINGS: Final[dict[str, dict[str, int]]] = {
    "light": {"n": 6},
    "medium": {"n": 12},
    "heavy": {"n": 18},
}


def auto_budget(
    num_preds: int,
    num_candidates: int,
    valset_size: int,
    minibatch_size: int = 35,
    full_eval_steps: int = 5,
) -> int:
    """The metric-call budget of an ``auto`` preset (DSPy's formula, MIPROv2-shaped)."""
    trials = int(max(2 * (num_preds * 2) * math.log2(num_candidates), 1.5 * num_candidates))
    total = valset_size + num_candidates * 5 + trials * minibatch_size
    if trials == 0:
        return total
    periodic_fulls = (trials + 1) // full_eval_steps + 1
    extra_final = 1 if trials < full_eval_steps else 0
    return total + (periodic_fulls + extra_final) * valset_size


@dataclass(frozen=True)
class DspyGEPAResult:
    """A GEPA run's record (``compiled.detailed_results`` with ``track_stats=True``)."""

    candidates: list[Any]
    parents: list[list[int | None]]
    val_aggregate_scores: list[float]
    val_subscores: list[dict[Any, float]]
    per_val_instance_best_candidates: dict[Any, set[int]]
    discovery_eval_counts: list[int]
    best_outputs_valset: dict[Any, list[tuple[int, Any]]] | None = None
    total_metric_calls: int | None = None
    num_full_val_evals: int | None = None
    log_dir: str | None = None
    seed: int | None = None
    val_aggregate_subscores: list[dict[str, float]] | None = None
    per_objective_best_candidates: dict[str, set[int]] | None = None
    objective_pareto_front: dict[str, float] | None = None

    @property
    def best_idx(self) -> int:
        scores = self.val_aggregate_scores
        return max(range(len(scores)), key=lambda i: scores[i])

    @property
    def best_candidate(self) -> Any:
        return self.candidates[self.best_idx]

    @property
    def highest_score_achieved_per_val_task(self) -> dict[Any, float]:
        return {
            val_id: self.val_subscores[next(iter(best))][val_id]
            for val_id, best in self.per_val_instance_best_candidates.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data: each candidate as its instructions per predictor name."""
        return {
            "candidates": [
                {name: p.signature.instructions for name, p in c.named_predictors()}
                for c in self.candidates
            ],
            "parents": self.parents,
            "val_aggregate_scores": self.val_aggregate_scores,
            "best_outputs_valset": self.best_outputs_valset,
            "val_subscores": self.val_subscores,
            "per_val_instance_best_candidates": {
                k: sorted(v) for k, v in self.per_val_instance_best_candidates.items()
            },
            "val_aggregate_subscores": self.val_aggregate_subscores,
            "per_objective_best_candidates": (
                None
                if self.per_objective_best_candidates is None
                else {k: sorted(v) for k, v in self.per_objective_best_candidates.items()}
            ),
            "objective_pareto_front": self.objective_pareto_front,
            "discovery_eval_counts": self.discovery_eval_counts,
            "total_metric_calls": self.total_metric_calls,
            "num_full_val_evals": self.num_full_val_evals,
            "log_dir": self.log_dir,
            "seed": self.seed,
            "best_idx": self.best_idx,
        }

    @staticmethod
    def from_gepa_result(result: Any, adapter: DspexGEPAAdapter) -> DspyGEPAResult:
        return DspyGEPAResult(
            candidates=[adapter.build_program(c) for c in result.candidates],
            parents=result.parents,
            val_aggregate_scores=result.val_aggregate_scores,
            best_outputs_valset=result.best_outputs_valset,
            val_subscores=result.val_subscores,
            per_val_instance_best_candidates=result.per_val_instance_best_candidates,
            discovery_eval_counts=result.discovery_eval_counts,
            val_aggregate_subscores=result.val_aggregate_subscores,
            per_objective_best_candidates=result.per_objective_best_candidates,
            objective_pareto_front=result.objective_pareto_front,
            total_metric_calls=result.total_metric_calls,
            num_full_val_evals=result.num_full_val_evals,
            log_dir=result.run_dir,
            seed=result.seed,
        )


@contextmanager
def _closing(speculator: Speculator | None) -> Iterator[None]:
    try:
        yield
    finally:
        if speculator is not None:
            if speculator.started:
                logger.info("GEPA speculation: %d prefetch runs", speculator.started)
            speculator.close()


def _describe(value: Any) -> Any:
    """A setting as the checkpoint fingerprints it: functions and LMs by name, not address."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    model = getattr(value, "model", None)
    if isinstance(model, str):
        return f"LM({model})"
    return getattr(value, "__qualname__", type(value).__qualname__)


class _LoggerAdapter:
    """gepa's logger protocol onto the ``dspex.programs`` logger."""

    def log(self, message: str) -> None:
        logger.info(message)


class GEPA(Teleprompter):
    """Evolves each predictor's instruction by reflecting on traced runs and metric feedback.

    The metric takes DSPy's five arguments ``(gold, pred, trace, pred_name,
    pred_trace)`` and returns a score or ``Prediction(score=..., feedback=...)``.
    Give exactly one budget: ``auto``, ``max_full_evals`` or ``max_metric_calls``.
    """

    def __init__(
        self,
        metric: Callable[..., Any],
        *,
        auto: Literal["light", "medium", "heavy"] | None = None,
        max_full_evals: int | None = None,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: Literal["pareto", "current_best"] = "pareto",
        reflection_lm: Any = None,
        skip_perfect_score: bool = True,
        add_format_failure_as_feedback: bool = False,
        instruction_proposer: Callable[..., dict[str, str]] | None = None,
        component_selector: Any = "round_robin",
        use_merge: bool = True,
        max_merge_invocations: int | None = 5,
        num_threads: int | None = None,
        failure_score: float = 0.0,
        perfect_score: float = 1.0,
        log_dir: str | None = None,
        track_stats: bool = False,
        use_wandb: bool = False,
        wandb_api_key: str | None = None,
        wandb_init_kwargs: dict[str, Any] | None = None,
        track_best_outputs: bool = False,
        warn_on_score_mismatch: bool = True,
        use_mlflow: bool = False,
        seed: int | None = 0,
        gepa_kwargs: dict[str, Any] | None = None,
        speculate: bool | Literal["off", "valset", "all"] = False,
    ) -> None:
        super().__init__()
        try:
            inspect.signature(metric).bind(None, None, None, None, None)
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"GEPA(metric={metric!r}): the metric must accept five arguments "
                "(gold, pred, trace, pred_name, pred_trace), e.g. "
                "def metric(gold, pred, trace=None, pred_name=None, pred_trace=None)"
            ) from exc
        budgets = {
            "auto": auto,
            "max_full_evals": max_full_evals,
            "max_metric_calls": max_metric_calls,
        }
        given = [name for name, value in budgets.items() if value is not None]
        if len(given) != 1:
            raise UsageError(
                f"GEPA: set exactly one of auto, max_full_evals, max_metric_calls (got "
                f"{', '.join(f'{n}={budgets[n]!r}' for n in given) or 'none'}), e.g. auto='light'"
            )
        if auto is not None and auto not in AUTO_RUN_SETTINGS:
            raise UsageError(f"GEPA(auto={auto!r}): use 'light', 'medium' or 'heavy'")
        if max_full_evals is not None:
            check_count("GEPA", "max_full_evals", max_full_evals, 1)
        if max_metric_calls is not None:
            check_count("GEPA", "max_metric_calls", max_metric_calls, 1)
        check_count("GEPA", "reflection_minibatch_size", reflection_minibatch_size, 1)
        if candidate_selection_strategy not in ("pareto", "current_best"):
            raise UsageError(
                f"GEPA(candidate_selection_strategy={candidate_selection_strategy!r}): "
                "use 'pareto' or 'current_best'"
            )
        if reflection_lm is None and instruction_proposer is None:
            raise UsageError(
                "GEPA(reflection_lm=None): GEPA needs a reflection LM (or an "
                "instruction_proposer), e.g. reflection_lm=dspex.LM('openai/gpt-5', "
                "temperature=1.0, max_tokens=32000)"
            )
        if track_best_outputs and not track_stats:
            raise UsageError("GEPA(track_best_outputs=True) needs track_stats=True as well")
        extra = dict(gepa_kwargs or {})
        for banned in ("max_reflection_cost", "reflection_prompt_template"):
            if extra.get(banned) is not None:
                raise UsageError(
                    f"GEPA(gepa_kwargs={{{banned!r}: ...}}) is not supported: dspex proposes "
                    "instructions itself; pass instruction_proposer= to customize"
                )
        self.metric_fn = metric
        self.auto = auto
        self.max_full_evals = max_full_evals
        self.max_metric_calls = max_metric_calls
        self.reflection_minibatch_size = reflection_minibatch_size
        self.candidate_selection_strategy = candidate_selection_strategy
        self.reflection_lm = reflection_lm
        self.skip_perfect_score = skip_perfect_score
        self.add_format_failure_as_feedback = add_format_failure_as_feedback
        self.custom_instruction_proposer = instruction_proposer
        self.component_selector = component_selector
        self.use_merge = use_merge
        self.max_merge_invocations = max_merge_invocations
        self.num_threads = num_threads
        self.failure_score = failure_score
        self.perfect_score = perfect_score
        self.log_dir = log_dir
        self.track_stats = track_stats
        self.use_wandb = use_wandb
        self.wandb_api_key = wandb_api_key
        self.wandb_init_kwargs = wandb_init_kwargs
        self.track_best_outputs = track_best_outputs
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.use_mlflow = use_mlflow
        self.seed = seed
        self.gepa_kwargs = extra
        self.speculate = check_speculate(speculate)

    def _settings(self) -> dict[str, Any]:
        """What a checkpoint must agree on: the search settings (callables by name)."""
        # Speculation changes what is requested when, never the results.
        skip = {
            "use_wandb",
            "wandb_api_key",
            "wandb_init_kwargs",
            "use_mlflow",
            "log_dir",
            "speculate",
        }
        return {key: _describe(value) for key, value in vars(self).items() if key not in skip}

    def auto_budget(
        self,
        num_preds: int,
        num_candidates: int,
        valset_size: int,
        minibatch_size: int = 35,
        full_eval_steps: int = 5,
    ) -> int:
        return auto_budget(num_preds, num_candidates, valset_size, minibatch_size, full_eval_steps)

    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        teacher: Any = None,
        valset: Sequence[Any] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The student with evolved instructions (a copy); the valset tracks the Pareto front.

        With ``checkpoint`` (a directory), finished evaluations and proposals are
        journaled there, and rerunning the same compile resumes after a crash.
        """
        try:
            from gepa.api import optimize
        except ImportError as exc:
            raise UsageError(
                "GEPA needs the gepa package: pip install 'dspex[gepa]' (or gepa==0.1.4)"
            ) from exc
        train = check_trainset(trainset, "GEPA.compile", need_inputs=True)
        if not train:
            raise UsageError("GEPA.compile(trainset=[]): pass at least one example")
        if teacher is not None:
            raise UsageError("GEPA.compile(teacher=...): GEPA takes no teacher; leave it out")
        val = check_trainset(valset, "GEPA.compile(valset)", need_inputs=True) if valset else None
        predictors = student.named_predictors()
        if not predictors:
            raise UsageError(f"GEPA.compile(student={student!r}): the program has no predictors")
        if self.auto is not None:
            self.max_metric_calls = auto_budget(
                max(len(predictors), 1),
                AUTO_RUN_SETTINGS[self.auto]["n"],
                len(val) if val is not None else len(train),
            )
        elif self.max_full_evals is not None:
            self.max_metric_calls = self.max_full_evals * (len(train) + (len(val or [])))
        if val is None:
            logger.warning(
                "GEPA: no valset; the trainset is used for both reflection and the Pareto "
                "scores (pass a separate valset to generalize)"
            )
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "trainset": fingerprint_examples(train),
                "valset": fingerprint_examples(val),
                "settings": digest(self._settings()),
            },
        )
        val = val or train
        logger.info("GEPA: a budget of about %s metric calls", self.max_metric_calls)
        threads = resolve_num_threads(self.num_threads, current_settings())
        work = max(len(val), self.reflection_minibatch_size * 2)
        speculator = None
        if self.speculate != "off" and resolve_backend() == "ray":
            # It would warm the driver's LM cache, which the Ray workers do not read.
            logger.warning("GEPA: speculate=%r is ignored on the Ray backend", self.speculate)
        elif self.speculate != "off":
            speculator = Speculator(
                self.speculate,
                trainset=train,
                valset=val,
                concurrency=max(threads, min(len(val) + len(train), 64)),
            )
        with (
            _closing(speculator),
            coordinate(type(self).__name__, num_threads=threads, work=work) as crew,
        ):
            adapter = DspexGEPAAdapter(
                student,
                metric=self.metric_fn,
                crew=crew,
                num_threads=threads,
                failure_score=self.failure_score,
                rng=random.Random(self.seed),
                reflection_lm=self.reflection_lm,
                instruction_proposer=self.custom_instruction_proposer,
                warn_on_score_mismatch=self.warn_on_score_mismatch,
                journal=journal,
                speculator=speculator,
            )
            seed_candidate = {
                name: predictor.signature.instructions for name, predictor in predictors
            }
            options: dict[str, Any] = {
                "candidate_selection_strategy": self.candidate_selection_strategy,
                "skip_perfect_score": self.skip_perfect_score,
                "reflection_minibatch_size": self.reflection_minibatch_size,
                "module_selector": self.component_selector,
                "perfect_score": self.perfect_score,
                "use_merge": self.use_merge,
                "max_merge_invocations": self.max_merge_invocations,
                "max_metric_calls": self.max_metric_calls,
                "logger": _LoggerAdapter(),
                "run_dir": self.log_dir,
                "use_wandb": self.use_wandb,
                "wandb_api_key": self.wandb_api_key,
                "wandb_init_kwargs": self.wandb_init_kwargs,
                "use_mlflow": self.use_mlflow,
                "track_best_outputs": self.track_best_outputs,
                # gepa's tqdm bar (metric calls), when stderr is a terminal
                "display_progress_bar": progress_enabled(None),
                "raise_on_exception": True,
                "seed": 0 if self.seed is None else self.seed,
                **self.gepa_kwargs,
            }
            try:
                result: Any = optimize(
                    seed_candidate=seed_candidate,
                    trainset=train,
                    valset=val,
                    adapter=adapter,  # type: ignore[arg-type]
                    **options,
                )
            finally:
                if journal is not None:
                    journal.close()
                    logger.info(
                        "GEPA checkpoint: %d units replayed, %d recorded",
                        journal.replayed,
                        journal.recorded,
                    )
            program = adapter.build_program(result.best_candidate)
            if self.track_stats:
                program.detailed_results = DspyGEPAResult.from_gepa_result(result, adapter)
        return program
