"""``COPRO``: coordinate ascent over each predictor's instruction and output prefix.

DSPy's algorithm, in rounds (``depth``):

1. a prompt model proposes ``breadth - 1`` instructions (each with a prefix
   for the last output field) from every predictor's current instruction;
   the current one is kept as a candidate too;
2. each candidate is scored by evaluating the whole program on the trainset
   with that predictor's signature changed; the predictor then keeps the best
   one, so later predictors are scored against it;
3. before the next round, the prompt model sees the best attempts so far with
   their scores (worst first) and proposes ``breadth`` more.

The best-scoring program is returned with ``candidate_programs`` and
``total_calls`` (and, with ``track_stats``, ``results_best`` and
``results_latest``: max/average/min/std of scores per predictor per round).
The evaluations run on the compile's coordinator pool (see ``_coordinator``).
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._evaluate import Evaluate
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._fields import InputField, OutputField
from dspex.programs._predict import Predict
from dspex.programs._settings import context, current_settings
from dspex.programs._signature import Signature
from dspex.programs._teleprompt._base import Teleprompter, check_trainset
from dspex.programs._teleprompt._coordinator import coordinate

__all__ = ["COPRO"]

logger = logging.getLogger("dspex.programs")


class ProposeInstruction(Signature):
    """You improve instructions for language models. Given the current instruction of a
    task (its input and output fields described in English), propose a new instruction that
    leads a capable language model to do the task well. Be creative."""

    basic_instruction: str = InputField(desc="The instruction before optimization")
    proposed_instruction: str = OutputField(desc="The improved instruction for the model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="The text that ends the prompt and helps the model start its answer"
    )


class ProposeFromAttempts(Signature):
    """You improve instructions for language models. Below are instructions already tried for
    a task with their validation scores, ordered from lowest to highest score (higher is
    better). Propose a new instruction that does even better. Be creative."""

    attempted_instructions: list[str] = InputField()
    proposed_instruction: str = OutputField(desc="The improved instruction for the model")
    proposed_prefix_for_output_field: str = OutputField(
        desc="The text that ends the prompt and helps the model start its answer"
    )


def _stats() -> dict[str, list[float]]:
    return {"depth": [], "max": [], "average": [], "min": [], "std": []}


def _add_stats(into: dict[str, list[float]], depth: int, scores: Sequence[float]) -> None:
    into["depth"].append(depth)
    into["max"].append(max(scores))
    into["average"].append(sum(scores) / len(scores))
    into["min"].append(min(scores))
    into["std"].append(statistics.pstdev(scores))


class COPRO(Teleprompter):
    """DSPy's instruction optimizer: ``COPRO(metric=m, breadth=10, depth=3).compile(prog,
    trainset=...)``. ``prompt_model`` writes the proposals (default: the configured LM)."""

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        prompt_model: Any = None,
        metric: Callable[..., Any] | None = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        **_ignored: Any,
    ) -> None:
        if isinstance(breadth, bool) or not isinstance(breadth, int) or breadth <= 1:
            raise UsageError(f"COPRO(breadth={breadth!r}): Breadth must be greater than 1")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise UsageError(f"COPRO(depth={depth!r}): use an int >= 1 (rounds of proposals)")
        self.metric = metric
        self.breadth = breadth
        self.depth = depth
        self.init_temperature = init_temperature
        self.prompt_model = prompt_model
        self.track_stats = track_stats

    # -- proposals ------------------------------------------------------------------------

    def _propose(self, signature: type[Signature], n: int, **inputs: Any) -> list[tuple[str, str]]:
        """``n`` (instruction, prefix) proposals from the prompt model."""
        predictor = Predict(signature, n=n, temperature=self.init_temperature)
        if self.prompt_model is not None:
            with context(lm=self.prompt_model):
                pred = predictor(**inputs)
        else:
            pred = predictor(**inputs)
        completions = pred.completions
        return list(
            zip(
                completions.proposed_instruction,
                completions.proposed_prefix_for_output_field,
                strict=True,
            )
        )

    # -- compile ------------------------------------------------------------------------

    def compile(
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        eval_kwargs: Mapping[str, Any] | None = None,
        **_ignored: Any,
    ) -> Any:
        """The best program found; ``student`` itself is left unchanged."""
        where = f"{type(self).__name__}.compile"
        trainset = check_trainset(trainset, where, need_inputs=True)
        if self.metric is None:
            raise UsageError(f"{where}: COPRO needs metric=..., e.g. COPRO(metric=exact_match)")
        eval_kwargs = dict(eval_kwargs or {})
        evaluate = Evaluate(devset=trainset, metric=self.metric, **eval_kwargs)
        module = student.deepcopy()
        predictors = module.predictors()
        if not predictors:
            raise UsageError(f"{where}: {type(student).__name__} has no predictors to optimize")
        threads = resolve_num_threads(eval_kwargs.get("num_threads"), current_settings())
        work = max(1, len(trainset))
        with coordinate(type(self).__name__, num_threads=threads, work=work):
            return self._search(module, evaluate)

    def _search(self, module: Any, evaluate: Evaluate) -> Any:
        predictors = module.predictors()
        keys = [id(p) for p in predictors]
        results_best = {key: _stats() for key in keys}
        results_latest = {key: _stats() for key in keys}
        # per predictor: every candidate ever proposed, and the newest round's
        all_candidates: dict[int, list[tuple[str, str]]] = {}
        for key, predictor in zip(keys, predictors, strict=True):
            signature = predictor.signature
            last = list(signature.fields)[-1]
            proposals = self._propose(
                ProposeInstruction, self.breadth - 1, basic_instruction=signature.instructions
            )
            proposals.append((signature.instructions, signature.fields[last].prefix))
            all_candidates[key] = proposals
        latest = {key: list(c) for key, c in all_candidates.items()}
        evaluated: dict[int, dict[tuple[str, str], dict[str, Any]]] = {key: {} for key in keys}
        clone = module.deepcopy()
        total_calls = 0
        depth = 0
        for depth in range(self.depth):
            logger.info("COPRO round %d/%d", depth + 1, self.depth)
            for index, (key, target) in enumerate(zip(keys, clone.predictors(), strict=True)):
                # With several predictors, every candidate is rescored: the others changed.
                candidates = all_candidates[key] if len(keys) > 1 else latest[key]
                latest_scores: list[float] = []
                for c_index, (raw_instruction, raw_prefix) in enumerate(candidates):
                    instruction = str(raw_instruction).strip('"').strip()
                    prefix = str(raw_prefix).strip('"').strip()
                    _set_instruction(target, instruction, prefix)
                    logger.info(
                        "round %d: candidate %d/%d for predictor %d of %d",
                        depth + 1,
                        c_index + 1,
                        len(candidates),
                        index + 1,
                        len(keys),
                    )
                    score = float(evaluate(clone).score)
                    total_calls += 1
                    seen = evaluated[key].get((instruction, prefix))
                    if seen is None or seen["score"] < score:
                        evaluated[key][(instruction, prefix)] = {
                            "score": score,
                            "program": clone.deepcopy(),
                            "instruction": instruction,
                            "prefix": prefix,
                            "depth": depth,
                        }
                    if len(candidates) - self.breadth <= c_index:
                        latest_scores.append(score)
                if self.track_stats and latest_scores:
                    _add_stats(results_latest[key], depth, latest_scores)
                best = max(evaluated[key].values(), key=lambda c: c["score"])
                _set_instruction(target, best["instruction"], best["prefix"])
            if depth == self.depth - 1:
                break
            for key in keys:
                ranked = sorted(evaluated[key].values(), key=lambda c: c["score"], reverse=True)
                if self.track_stats:
                    _add_stats(results_best[key], depth, [c["score"] for c in ranked[:10]])
                shown = ranked[: min(len(ranked), self.breadth)]
                attempts: list[str] = []
                for number, attempt in enumerate(reversed(shown), 1):  # worst first
                    attempts.append(f"Instruction #{number}: {attempt['instruction']}")
                    attempts.append(f"Prefix #{number}: {attempt['prefix']}")
                    attempts.append(f"Resulting Score #{number}: {attempt['score']}")
                proposals = self._propose(
                    ProposeFromAttempts, self.breadth, attempted_instructions=attempts
                )
                latest[key] = proposals
                all_candidates[key].extend(proposals)

        programs: list[dict[str, Any]] = []
        for key in keys:
            found = sorted(evaluated[key].values(), key=lambda c: c["score"], reverse=True)
            programs.extend(found)
            if self.track_stats and found:
                _add_stats(results_best[key], depth, [c["score"] for c in found[:10]])
        programs.sort(key=lambda c: c["score"], reverse=True)
        programs = _distinct(programs)
        best_program: Any = programs[0]["program"]
        best_program.candidate_programs = programs
        best_program.total_calls = total_calls
        if self.track_stats:
            best_program.results_best = results_best
            best_program.results_latest = results_latest
        return best_program


def _set_instruction(predictor: Any, instruction: str, prefix: str) -> None:
    """Give ``predictor`` a signature with ``instruction`` and the last field's ``prefix``."""
    signature = predictor.signature
    last = list(signature.fields)[-1]
    predictor.signature = signature.with_instructions(instruction).with_updated_fields(
        last, prefix=prefix
    )


def _distinct(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates with the same score and instruction/prefix kept once (first wins)."""
    seen: set[tuple[float, str, str]] = set()
    kept = []
    for candidate in candidates:
        key = (candidate["score"], candidate["instruction"], candidate["prefix"])
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept
