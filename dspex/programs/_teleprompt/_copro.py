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

The whole compile is one coordinator (``COPRO`` in ``rt.tree()``). A round's
candidates for one predictor do not depend on each other, so they are scored
at once, one :class:`~dspex.Evaluate` per candidate on the coordinator's pool
(each evaluation's own pool is a child of the coordinator), and read back in
candidate order: the result does not depend on thread timing. The proposals
for the predictors of a round run on the pool too.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from dspex.actors._lm._budget import budget_error
from dspex.errors import UsageError
from dspex.programs._evaluate import Evaluate
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._fields import InputField, OutputField
from dspex.programs._predict import Predict
from dspex.programs._settings import context, current_settings
from dspex.programs._signature import Signature
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._checkpoint import (
    Journal,
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import Coordination, coordinate
from dspex.programs._teleprompt._progress import CompileBar

__all__ = ["COPRO"]

logger = logging.getLogger("dspex.programs")

T = TypeVar("T")
Proposal = tuple[str, str]
"""An (instruction, prefix of the last output field) pair."""


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
    trainset=...)``. ``prompt_model`` writes the proposals (default: the configured LM);
    ``eval_kwargs`` go to each candidate's :class:`~dspex.Evaluate`."""

    def __init__(  # noqa: PLR0917  (DSPy's positional signature)
        self,
        prompt_model: Any = None,
        metric: Callable[..., Any] | None = None,
        breadth: int = 10,
        depth: int = 3,
        init_temperature: float = 1.4,
        track_stats: bool = False,
        **_ignored: Any,  # DSPy accepts and ignores extra keywords (e.g. verbose)
    ) -> None:
        if isinstance(breadth, bool) or not isinstance(breadth, int) or breadth <= 1:
            raise UsageError(
                f"COPRO(breadth={breadth!r}): Breadth must be greater than 1 (the number of "
                "instructions tried per round), e.g. breadth=10"
            )
        self.metric = metric
        self.breadth = breadth
        self.depth = check_count("COPRO", "depth", depth, 1)
        self.init_temperature = init_temperature
        self.prompt_model = prompt_model
        self.track_stats = track_stats

    def compile(  # type: ignore[override]  # DSPy's signature
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        eval_kwargs: Mapping[str, Any] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The best program found; ``student`` itself is left unchanged.

        With ``checkpoint`` (a directory), each proposal and each candidate's
        score is journaled there; rerunning the same compile resumes.
        """
        where = f"{type(self).__name__}.compile"
        examples = check_trainset(trainset, where, need_inputs=True)
        if self.metric is None:
            raise UsageError(
                f"{where}: COPRO needs metric=..., e.g. COPRO(metric=dspex.answer_exact_match)"
            )
        if eval_kwargs is not None and not isinstance(eval_kwargs, Mapping):
            raise UsageError(
                f"{where}(eval_kwargs={eval_kwargs!r}): pass a dict of Evaluate options, "
                "e.g. eval_kwargs={'num_threads': 8, 'display_progress': False}"
            )
        options = dict(eval_kwargs or {})
        options.setdefault("display_progress", False)  # many evaluations at once: no bars
        Evaluate(devset=examples, metric=self.metric, **options)  # bad options fail here
        module = student.deepcopy()
        if not module.predictors():
            raise UsageError(f"{where}: {type(student).__name__} has no predictors to optimize")
        settings = current_settings()
        threads = resolve_num_threads(None, settings)
        per_eval = resolve_num_threads(options.get("num_threads"), settings)
        # Candidates at once x threads per evaluation stays near the num_threads setting.
        at_once = max(1, threads // max(1, per_eval))
        work = self.breadth * self.depth * len(module.predictors())
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "trainset": fingerprint_examples(examples),
                "settings": digest(self._checkpoint_settings(options)),
            },
        )
        try:
            with coordinate(type(self).__name__, num_threads=at_once, work=work) as crew:
                search = _Search(
                    self, module, trainset=examples, eval_kwargs=options, crew=crew,
                    at_once=at_once, journal=journal,
                )  # fmt: skip
                return search.run()
        finally:
            if journal is not None:
                journal.close()
                logger.info(
                    "COPRO checkpoint: %d units replayed, %d recorded",
                    journal.replayed,
                    journal.recorded,
                )

    def _checkpoint_settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """What a checkpoint must agree on (functions and LMs by name)."""
        metric = self.metric
        return {
            "metric": getattr(metric, "__qualname__", type(metric).__qualname__),
            "breadth": self.breadth,
            "depth": self.depth,
            "init_temperature": self.init_temperature,
            "prompt_model": getattr(self.prompt_model, "model", None),
            "eval_kwargs": {k: repr(v) for k, v in options.items() if k != "display_progress"},
        }


class _Search:
    """One COPRO compile's state (caller's thread; items run on ``crew``'s pool)."""

    def __init__(
        self,
        optimizer: COPRO,
        module: Any,
        *,
        trainset: list[Any],
        eval_kwargs: dict[str, Any],
        crew: Coordination,
        at_once: int,
        journal: Journal | None = None,
    ) -> None:
        self.opt = optimizer
        self.journal = journal
        self.batches = 0
        self.module = module
        self.trainset = trainset
        self.eval_kwargs = eval_kwargs
        self.crew = crew
        self.at_once = at_once
        self.names = [name for name, _ in module.named_predictors()]
        self.results_best = {name: _stats() for name in self.names}
        self.results_latest = {name: _stats() for name in self.names}
        self.evaluated: dict[str, dict[Proposal, dict[str, Any]]] = {n: {} for n in self.names}
        self.total_calls = 0

    def _fan_out(
        self, body: Callable[[Any], T], items: Sequence[Any], asks: Sequence[str]
    ) -> list[T]:
        """``body(item)`` for every item on the pool; the values in item order.

        With a journal, each item is a unit (``<batch>:<position>``, asked
        ``asks[i]``): the journaled ones are answered from it, the others run
        and are recorded as they are read back.
        """
        self.batches += 1
        units = [f"{self.batches}:{i}" for i in range(len(items))]
        values: dict[int, T] = {}
        if self.journal is not None:
            for i, (unit, ask) in enumerate(zip(units, asks, strict=True)):
                found, value = self.journal.replay(unit, ask)
                if found:
                    values[i] = value
        todo = [i for i in range(len(items)) if i not in values]
        with self.crew.stream(body, [items[i] for i in todo], num_threads=self.at_once) as results:
            for result in results:
                index = todo[result.index]
                values[index] = result.unwrap()  # the first failure ends the compile
                if self.journal is not None:
                    self.journal.record(units[index], asks[index], values[index])
        return [values[i] for i in range(len(items))]

    def _propose(self, request: tuple[type[Signature], int, dict[str, Any]]) -> list[Proposal]:
        """``n`` (instruction, prefix) proposals from the prompt model (a pool worker)."""
        signature, n, inputs = request
        predictor = Predict(signature, n=n, temperature=self.opt.init_temperature)
        if self.opt.prompt_model is not None:
            with context(lm=self.opt.prompt_model):
                pred = predictor(**inputs)
        else:
            pred = predictor(**inputs)
        completions = pred.completions
        return list(
            zip(
                (str(v) for v in completions.proposed_instruction),
                (str(v) for v in completions.proposed_prefix_for_output_field),
                strict=True,
            )
        )

    def _score(self, program: Any) -> float:
        """The trainset score of one candidate program (a pool worker)."""
        evaluate = Evaluate(devset=self.trainset, metric=self.opt.metric, **self.eval_kwargs)
        return float(evaluate(program).score)

    def run(self) -> Any:
        opt = self.opt
        first = []
        for predictor in self.module.predictors():
            inputs = {"basic_instruction": predictor.signature.instructions}
            first.append((ProposeInstruction, opt.breadth - 1, inputs))
        all_candidates: dict[str, list[Proposal]] = {}
        for name, predictor, proposals in zip(
            self.names,
            self.module.predictors(),
            self._fan_out(self._propose, first, _asks(first)),
            strict=True,
        ):
            signature = predictor.signature
            last = list(signature.fields)[-1]
            # the current instruction competes too
            all_candidates[name] = [
                *proposals,
                (signature.instructions, signature.fields[last].prefix),
            ]
        latest = {name: list(c) for name, c in all_candidates.items()}
        clone = self.module.deepcopy()
        with CompileBar(opt.depth * len(self.names), "COPRO rounds x predictors") as bar:
            return self._rounds(clone, all_candidates, latest, bar)

    def _rounds(
        self,
        clone: Any,
        all_candidates: dict[str, list[Proposal]],
        latest: dict[str, list[Proposal]],
        bar: CompileBar,
    ) -> Any:
        opt = self.opt
        depth = 0
        for depth in range(opt.depth):
            logger.info("COPRO round %d/%d", depth + 1, opt.depth)
            for index, name in enumerate(self.names):
                # With several predictors every candidate is rescored: the others changed.
                candidates = all_candidates[name] if len(self.names) > 1 else latest[name]
                bar.step(self._round(clone, index, name, candidates, depth))
            if depth == opt.depth - 1:
                break
            requests = [
                (ProposeFromAttempts, opt.breadth, self._attempts(n, depth)) for n in self.names
            ]
            try:
                proposed = self._fan_out(self._propose, requests, _asks(requests))
            except Exception as error:
                spent = budget_error(error)
                if spent is None:
                    raise
                # No budget left for proposals: the candidates scored so far are the result.
                logger.warning("COPRO: %s; returning the best candidate so far", spent)
                break
            for name, proposals in zip(self.names, proposed, strict=True):
                latest[name] = proposals
                all_candidates[name].extend(proposals)
        return self._result(depth)

    def _round(
        self, clone: Any, index: int, name: str, candidates: list[Proposal], depth: int
    ) -> float:
        """Score ``candidates`` for predictor ``index`` of ``clone``; it keeps the best
        (whose score is returned)."""
        cleaned = [(str(i).strip('"').strip(), str(p).strip('"').strip()) for i, p in candidates]
        programs = []
        for instruction, prefix in cleaned:
            program = clone.deepcopy()
            _set_instruction(program.predictors()[index], instruction, prefix)
            programs.append(program)
        logger.info(
            "round %d: scoring %d candidates for predictor %d of %d (%s)",
            depth + 1,
            len(programs),
            index + 1,
            len(self.names),
            name,
        )
        scores = self._fan_out(self._score, programs, [fingerprint_program(p) for p in programs])
        self.total_calls += len(scores)
        seen = self.evaluated[name]
        for (instruction, prefix), program, score in zip(cleaned, programs, scores, strict=True):
            known = seen.get((instruction, prefix))
            if known is None or known["score"] < score:  # a repeat keeps its best score
                seen[(instruction, prefix)] = {
                    "score": score,
                    "program": program,
                    "instruction": instruction,
                    "prefix": prefix,
                    "depth": depth,
                }
        if self.opt.track_stats:  # the newest proposals: the last `breadth` candidates
            _add_stats(self.results_latest[name], depth, scores[-self.opt.breadth :])
        best = max(seen.values(), key=lambda c: c["score"])  # the first, on ties
        _set_instruction(clone.predictors()[index], best["instruction"], best["prefix"])
        return float(best["score"])

    def _attempts(self, name: str, depth: int) -> dict[str, Any]:
        """The next proposal's input: the best attempts so far, worst first, with scores."""
        ranked = sorted(self.evaluated[name].values(), key=lambda c: c["score"], reverse=True)
        if self.opt.track_stats:
            _add_stats(self.results_best[name], depth, [c["score"] for c in ranked[:10]])
        attempts: list[str] = []
        for number, attempt in enumerate(reversed(ranked[: self.opt.breadth]), 1):
            attempts.append(f"Instruction #{number}: {attempt['instruction']}")
            attempts.append(f"Prefix #{number}: {attempt['prefix']}")
            attempts.append(f"Resulting Score #{number}: {attempt['score']}")
        return {"attempted_instructions": attempts}

    def _result(self, depth: int) -> Any:
        programs: list[dict[str, Any]] = []
        for name in self.names:
            found = sorted(self.evaluated[name].values(), key=lambda c: c["score"], reverse=True)
            programs.extend(found)
            if self.opt.track_stats and found:
                _add_stats(self.results_best[name], depth, [c["score"] for c in found[:10]])
        programs.sort(key=lambda c: c["score"], reverse=True)  # stable: earlier wins ties
        programs = _distinct(programs)
        best_program: Any = programs[0]["program"]
        best_program.candidate_programs = programs
        best_program.total_calls = self.total_calls
        if self.opt.track_stats:
            best_program.results_best = self.results_best
            best_program.results_latest = self.results_latest
        return best_program


def _asks(requests: Sequence[tuple[type[Signature], int, dict[str, Any]]]) -> list[str]:
    """Proposal requests as a journal can compare them."""
    return [digest([signature.__name__, n, inputs]) for signature, n, inputs in requests]


def _set_instruction(predictor: Any, instruction: str, prefix: str) -> None:
    """Give ``predictor`` a signature with ``instruction`` and the last field's ``prefix``."""
    signature = predictor.signature
    last = list(signature.fields)[-1]
    predictor.signature = signature.with_instructions(instruction).with_updated_fields(
        last, prefix=prefix
    )


def _distinct(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates whose programs have the same score and signatures kept once (first wins)."""
    seen: set[tuple[float, tuple[tuple[str, str], ...]]] = set()
    kept = []
    for candidate in candidates:
        prompts = tuple(
            (p.signature.instructions, p.signature.fields[list(p.signature.fields)[-1]].prefix)
            for p in candidate["program"].predictors()
        )
        key = (candidate["score"], prompts)
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept
