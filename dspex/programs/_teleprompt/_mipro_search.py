"""MIPROv2 step 3: find the best instruction and demo set for each predictor.

Each predictor has two categorical parameters, ``"{i}_predictor_instruction"``
(an index into its instruction candidates) and ``"{i}_predictor_demos"`` (an
index into its demo sets; absent when optimizing zero-shot). DSPy searches
them with optuna's TPE sampler; dspex has its own small one,
:class:`CategoricalTPE`, so optuna is not a dependency and the search is the
same whether or not it is installed.

The trial schedule is DSPy's. Trial 1 evaluates the unchanged program on the
full valset. Each later trial assembles a candidate from the sampler's
choices and scores it on a minibatch (``minibatch=True``) or the full valset.
With minibatches, every ``minibatch_full_eval_steps`` trials (and once at the
end) the combination with the best average minibatch score not yet fully
evaluated gets a full evaluation; only full evaluations can make a program
the best one. Trial numbers count the full evaluations too, as optuna's do.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any, Final

from dspex._record import Record
from dspex.errors import UsageError
from dspex.programs._teleprompt._checkpoint import Journal, digest, fingerprint_program
from dspex.programs._teleprompt._progress import CompileBar

__all__ = ["CategoricalTPE", "PromptSearch", "SearchOutcome", "adjusted_num_trials"]

logger = logging.getLogger("dspex.programs")

STARTUP_TRIALS: Final = 4
"""Observations (the default program's included) before the sampler stops sampling at random."""

_GAMMA: Final = 0.25
"""Share of the observations, best first, that make the "good" density."""

_MAX_GOOD: Final = 25
_EI_CANDIDATES: Final = 24
"""Points drawn from the good density per suggestion; the best good/bad ratio wins."""

_SMOOTHING: Final = 1.0
"""Prior weight of each kernel: how much of its mass is spread evenly over the choices."""


class CategoricalTPE:
    """A seeded Tree-structured Parzen Estimator over categorical parameters (maximizing).

    ``space`` maps each parameter to its number of choices. The first
    :data:`STARTUP_TRIALS` observations are sampled uniformly. After that the
    observations are split into the best quarter ("good") and the rest
    ("bad"); each side's density is a mixture of one kernel per observation
    (mostly on the observed choice of every parameter, the rest spread evenly,
    so choices move together as in optuna's multivariate TPE) plus a uniform
    prior. Of :data:`_EI_CANDIDATES` points drawn from the good density, the
    one with the largest good/bad density ratio is suggested. Called from the
    compiling thread only.
    """

    def __init__(self, space: Mapping[str, int], *, seed: int) -> None:
        if not space or any(size < 1 for size in space.values()):
            raise ValueError(f"every parameter needs at least one choice, got {dict(space)!r}")
        self._names = tuple(space)
        self._sizes = tuple(space.values())
        self._rng = random.Random(seed)
        self._observed: list[tuple[tuple[int, ...], float]] = []

    @property
    def observations(self) -> int:
        """How many results the sampler has been told."""
        return len(self._observed)

    def tell(self, params: Mapping[str, int], value: float) -> None:
        """Record that ``params`` scored ``value`` (non-finite scores are ignored)."""
        if math.isfinite(value):
            point = tuple(int(params[name]) for name in self._names)
            self._observed.append((point, float(value)))

    def ask(self) -> dict[str, int]:
        """The next choices to try: one index per parameter."""
        if len(self._observed) < STARTUP_TRIALS:
            point = tuple(self._rng.randrange(size) for size in self._sizes)
        else:
            point = self._suggest()
        return dict(zip(self._names, point, strict=True))

    def _suggest(self) -> tuple[int, ...]:
        ranked = sorted(self._observed, key=lambda entry: entry[1], reverse=True)  # stable
        cut = max(1, min(_MAX_GOOD, math.ceil(_GAMMA * len(ranked))))
        good = [point for point, _ in ranked[:cut]]
        bad = [point for point, _ in ranked[cut:]]
        best: tuple[int, ...] | None = None
        best_ratio = -math.inf
        for _ in range(_EI_CANDIDATES):
            point = self._sample(good)
            ratio = self._log_density(point, good) - self._log_density(point, bad)
            if ratio > best_ratio:
                best, best_ratio = point, ratio
        assert best is not None, "_EI_CANDIDATES > 0 draws at least one point"
        return best

    def _sample(self, centers: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        pick = self._rng.random() * (len(centers) + 1.0)  # the prior weighs as one kernel
        if pick >= len(centers):
            return tuple(self._rng.randrange(size) for size in self._sizes)
        center = centers[int(pick)]
        keep = 1.0 / (1.0 + _SMOOTHING)
        return tuple(
            choice if self._rng.random() < keep else self._rng.randrange(size)
            for choice, size in zip(center, self._sizes, strict=True)
        )

    def _log_density(self, point: tuple[int, ...], centers: Sequence[tuple[int, ...]]) -> float:
        total = math.prod(1.0 / size for size in self._sizes)  # the uniform prior kernel
        for center in centers:
            total += math.prod(
                ((1.0 if x == c else 0.0) + _SMOOTHING / size) / (1.0 + _SMOOTHING)
                for x, c, size in zip(point, center, self._sizes, strict=True)
            )
        return math.log(total / (len(centers) + 1.0))


def adjusted_num_trials(num_trials: int, minibatch: bool, full_eval_steps: int) -> int:
    """Trials including the default program's and the periodic full evaluations (DSPy's count)."""
    if not minibatch:
        return num_trials
    extra_at_end = 1 if num_trials % full_eval_steps else 0
    return num_trials + num_trials // full_eval_steps + 1 + extra_at_end


class SearchOutcome(Record):
    """What the search found, and its records (DSPy's names)."""

    best_program: Any
    best_score: float
    trial_logs: dict[int, dict[str, Any]]
    score_data: list[dict[str, Any]]
    """``{"score", "program", "full_eval"}`` per evaluation, in order."""
    total_eval_calls: int


class _Combo(Record):
    """The evaluations of one combination of choices (for the minibatch averages)."""

    scores: list[float]
    program: Any
    params: dict[str, int]


class PromptSearch:
    """The trial loop of step 3 (runs in the compiling thread; evaluations fan out).

    ``instructions[i]`` and ``demos[i]`` are predictor ``i``'s candidates
    (``demos`` None: zero-shot, instructions only). ``evaluate`` is an
    :class:`~dspex.Evaluate` on ``valset``; minibatches are drawn from
    ``valset`` with ``rng``.
    """

    def __init__(
        self,
        program: Any,
        instructions: Mapping[int, Sequence[str]],
        demos: Mapping[int, Sequence[Sequence[Any]]] | None,
        evaluate: Any,
        valset: Sequence[Any],
        *,
        rng: random.Random,
        seed: int,
        minibatch: bool,
        minibatch_size: int,
        full_eval_steps: int,
        log_dir: str | None = None,
        verbose: bool = False,
        journal: Journal | None = None,
    ) -> None:
        self._program = program
        self._journal = journal
        self._scored = 0
        self._instructions = instructions
        self._demos = demos or None
        self._evaluate = evaluate
        self._valset = list(valset)
        self._rng = rng
        self._minibatch = minibatch
        self._batch = minibatch_size if minibatch else len(self._valset)
        self._steps = full_eval_steps
        self._log_dir = log_dir
        self._verbose = verbose
        space: dict[str, int] = {}
        for i in range(len(program.predictors())):
            space[f"{i}_predictor_instruction"] = len(instructions[i])
            if self._demos is not None:
                space[f"{i}_predictor_demos"] = len(self._demos[i])
        self._sampler = CategoricalTPE(space, seed=seed)
        self._defaults = dict.fromkeys(space, 0)
        self._combos: dict[str, _Combo] = {}
        self._fully_evaluated: dict[str, dict[str, Any]] = {}
        self.trial_logs: dict[int, dict[str, Any]] = {}
        self.score_data: list[dict[str, Any]] = []
        self.total_eval_calls = 0
        self.best_score = -math.inf
        self.best_program: Any = None

    def run(self, num_trials: int) -> SearchOutcome:
        """Trial 1 (the default program), then ``num_trials`` sampled ones."""
        total = adjusted_num_trials(num_trials, self._minibatch, self._steps)
        logger.info("== Trial 1 / %d - Full Evaluation of Default Program ==", total)
        default_score = self._score(self._program, full=True)
        logger.info("Default program score: %s", default_score)
        self.total_eval_calls = len(self._valset)
        self.trial_logs[1] = self._full_log(self._program.deepcopy(), default_score, -1, None)
        self.best_score, self.best_program = default_score, self._program.deepcopy()
        self.score_data.append(
            {"score": default_score, "program": self._program.deepcopy(), "full_eval": True}
        )
        self._sampler.tell(self._defaults, default_score)
        number = 1  # optuna-style trial numbers: the default program's trial was number 0
        with CompileBar(total, "MIPROv2 trials") as bar:
            bar.step(self.best_score)
            for _ in range(num_trials):
                trial_num = number + 1
                number += 1
                self._trial(trial_num, num_trials, total)
                bar.step(self.best_score)
                if self._minibatch and (
                    trial_num % (self._steps + 1) == 0 or trial_num == total - 1
                ):
                    ran = self._full_evaluation(trial_num, total)
                    number += ran
                    if ran:
                        bar.step(self.best_score)
        logger.info("Returning best identified program with score %s!", self.best_score)
        return SearchOutcome(
            self.best_program,
            self.best_score,
            self.trial_logs,
            self.score_data,
            self.total_eval_calls,
        )

    # -- one trial -----------------------------------------------------------------------

    def _trial(self, trial_num: int, num_trials: int, total: int) -> None:
        if self._minibatch:
            logger.info("== Trial %d / %d - Minibatch ==", trial_num, total)
        else:
            logger.info("===== Trial %d / %d =====", trial_num, num_trials + 1)
        log: dict[str, Any] = {}
        self.trial_logs[trial_num] = log
        params = self._sampler.ask()
        candidate, chosen = self._assemble(params, log)
        score = self._score(candidate, full=False)
        self.total_eval_calls += self._batch
        full = self._batch >= len(self._valset)
        if not self._minibatch and score > self.best_score:
            self.best_score, self.best_program = score, candidate.deepcopy()
            logger.info("Best full score so far! Score: %s", score)
        self.score_data.append({"score": score, "program": candidate, "full_eval": full})
        if self._minibatch:
            log["mb_program_path"] = self._save(candidate, trial_num)
            log["mb_score"] = score
            log["mb_program"] = candidate.deepcopy()
        else:
            log["full_eval_program_path"] = self._save(candidate, trial_num)
            log["full_eval_score"] = score
            log["full_eval_program"] = candidate.deepcopy()
        log["total_eval_calls_so_far"] = self.total_eval_calls
        logger.info("Score: %s with parameters %s.", score, chosen)
        logger.info("Best full score so far: %s", self.best_score)
        self._sampler.tell(params, score)
        combo = self._combos.setdefault(",".join(chosen), _Combo([], candidate, params))
        combo.scores.append(score)

    def _assemble(self, params: Mapping[str, int], log: dict[str, Any]) -> tuple[Any, list[str]]:
        """A copy of the program with the chosen instructions and demos in place."""
        candidate = self._program.deepcopy()
        chosen: list[str] = []
        for i, predictor in enumerate(candidate.predictors()):
            key = f"{i}_predictor_instruction"
            index = params[key]
            predictor.signature = predictor.signature.with_instructions(
                self._instructions[i][index]
            )
            log[key] = index
            chosen.append(f"Predictor {i}: Instruction {index}")
            if self._demos is not None:
                key = f"{i}_predictor_demos"
                index = params[key]
                predictor.demos = list(self._demos[i][index])
                log[key] = index
                chosen.append(f"Predictor {i}: Few-Shot Set {index}")
        if self._verbose:
            for i, predictor in enumerate(candidate.predictors()):
                logger.info("Predictor %d instruction: %s", i, predictor.signature.instructions)
        return candidate, chosen

    def _full_evaluation(self, trial_num: int, total: int) -> int:
        """Fully evaluate the best-averaging combination not yet evaluated; 1 if one ran."""
        pick = self._best_average()
        if pick is None:
            logger.info("Every combination tried so far had its full evaluation; skipping one.")
            return 0
        key, mean, combo = pick
        logger.info("===== Trial %d / %d - Full Evaluation =====", trial_num + 1, total)
        logger.info("Doing full eval on next top averaging program (Avg Score: %s)", mean)
        score = self._score(combo.program, full=True)
        self.score_data.append({"score": score, "program": combo.program, "full_eval": True})
        self._sampler.tell(combo.params, score)
        self._fully_evaluated[key] = {"program": combo.program, "score": score}
        self.total_eval_calls += len(self._valset)
        self.trial_logs[trial_num + 1] = self._full_log(
            combo.program, score, trial_num + 1, "full_eval"
        )
        if score > self.best_score:
            logger.info("New best full eval score! Score: %s", score)
            self.best_score, self.best_program = score, combo.program.deepcopy()
        return 1

    def _best_average(self) -> tuple[str, float, _Combo] | None:
        averaged = [
            (key, sum(combo.scores) / len(combo.scores), combo)
            for key, combo in self._combos.items()
        ]
        averaged.sort(key=lambda entry: entry[1], reverse=True)  # stable: first tried wins ties
        for entry in averaged:
            if entry[0] not in self._fully_evaluated:
                return entry
        return None

    # -- evaluation and records ------------------------------------------------------------

    def _score(self, program: Any, *, full: bool) -> float:
        """The program's score on the valset or a fresh minibatch of it (0.0 if it fails)."""
        size = len(self._valset) if full else self._batch
        # The minibatch is drawn before the journal is asked: a replay must move the
        # generator as the first run did.
        picked = (
            list(range(len(self._valset)))
            if size >= len(self._valset)
            else self._rng.sample(range(len(self._valset)), size)
        )
        self._scored += 1
        unit, ask = f"score:{self._scored}", ""
        if self._journal is not None:
            ask = digest([fingerprint_program(program), picked])
            found, saved = self._journal.replay(unit, ask)
            if found:
                return float(saved)
        try:
            result = self._evaluate(program, devset=[self._valset[i] for i in picked])
        except UsageError:
            raise  # a misuse (bad metric, bad program) must not read as a bad score
        except Exception:
            logger.error("An exception occurred during evaluation", exc_info=True)
            return 0.0  # not journaled: a resume tries it again
        score = float(result.score)
        if self._journal is not None:
            self._journal.record(unit, ask, score)
        return score

    def _full_log(
        self, program: Any, score: float, file_num: int, note: str | None
    ) -> dict[str, Any]:
        """A full evaluation's trial log (``file_num`` names its saved file)."""
        return {
            "full_eval_program_path": self._save(program, file_num, note),
            "full_eval_score": score,
            "total_eval_calls_so_far": self.total_eval_calls,
            "full_eval_program": program,
        }

    def _save(self, program: Any, trial_num: int, note: str | None = None) -> str | None:
        """Save a candidate under ``log_dir/evaluated_programs`` (DSPy's layout), if set."""
        if self._log_dir is None:
            return None
        folder = os.path.join(self._log_dir, "evaluated_programs")
        os.makedirs(folder, exist_ok=True)
        name = f"program_{trial_num}_{note}.json" if note else f"program_{trial_num}.json"
        path = os.path.join(folder, name)
        program.save(path)
        return path
