"""SIMBA: stochastic introspective mini-batch ascent (DSPy's algorithm, dspex's pool).

Each step samples a minibatch, runs it ``num_candidates`` times (programs
drawn by softmax over their scores, each on a fresh rollout of the LM),
finds the examples whose runs differ most, and builds new candidates from
them: a demo from the best run, or a rule contrasting the best and worst.
The candidates are scored on the same minibatch. All runs of a step go to
the compile's coordinator pool at once.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._backend import resolve_backend
from dspex.programs._evaluate_engine import resolve_num_threads
from dspex.programs._evaluate_progress import progress_enabled
from dspex.programs._settings import current_settings
from dspex.programs._teleprompt._attempt import rollout_lm
from dspex.programs._teleprompt._base import Teleprompter, check_count, check_trainset
from dspex.programs._teleprompt._checkpoint import (
    Journal,
    digest,
    fingerprint_examples,
    fingerprint_program,
    open_journal,
)
from dspex.programs._teleprompt._coordinator import Coordination, coordinate
from dspex.programs._teleprompt._rollouts import plain_record, revive_record, run_pair
from dspex.programs._teleprompt._simba_strategies import append_a_demo, append_a_rule

__all__ = ["SIMBA", "percentile", "poisson"]

logger = logging.getLogger("dspex.programs")


class SIMBA(Teleprompter):
    """Improves demos and instructions on minibatches, keeping the best program seen."""

    def __init__(
        self,
        *,
        metric: Callable[..., Any],
        bsize: int = 32,
        num_candidates: int = 6,
        max_steps: int = 8,
        max_demos: int = 4,
        prompt_model: Any = None,
        teacher_settings: dict[str, Any] | None = None,
        demo_input_field_maxlen: int = 100_000,
        num_threads: int | None = None,
        temperature_for_sampling: float = 0.2,
        temperature_for_candidates: float = 0.2,
    ) -> None:
        super().__init__()
        if not callable(metric):
            raise UsageError(f"SIMBA(metric={metric!r}): pass a function (example, prediction)")
        check_count("SIMBA", "bsize", bsize, 1)
        check_count("SIMBA", "num_candidates", num_candidates, 1)
        check_count("SIMBA", "max_steps", max_steps, 0)
        check_count("SIMBA", "max_demos", max_demos, 0)
        for field, value in (
            ("temperature_for_sampling", temperature_for_sampling),
            ("temperature_for_candidates", temperature_for_candidates),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(f"SIMBA({field}={value!r}): must be a number > 0, e.g. 0.2")
        self.metric = metric
        self.bsize = bsize
        self.num_candidates = num_candidates
        self.max_steps = max_steps
        self.max_demos = max_demos
        self.prompt_model = prompt_model or current_settings().get("lm")
        self.teacher_settings = teacher_settings
        self.demo_input_field_maxlen = demo_input_field_maxlen
        self.num_threads = num_threads
        self.temperature_for_sampling = temperature_for_sampling
        self.temperature_for_candidates = temperature_for_candidates
        self.strategies: list[Callable[..., bool]] = (
            [append_a_demo(demo_input_field_maxlen), append_a_rule]
            if max_demos > 0
            else [append_a_rule]
        )

    def compile(  # type: ignore[override]
        self,
        student: Any,
        *,
        trainset: Sequence[Any],
        seed: int = 0,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The best program found (a copy), with ``candidate_programs`` and ``trial_logs``.

        With ``checkpoint`` (a directory), each finished batch of runs is
        journaled there, and rerunning the same compile resumes after a crash.
        """
        train = check_trainset(trainset, "SIMBA.compile", need_inputs=True)
        if len(train) < self.bsize:
            raise UsageError(
                f"SIMBA.compile: the trainset has {len(train)} examples, fewer than "
                f"bsize={self.bsize}; pass more examples or a smaller bsize"
            )
        threads = resolve_num_threads(self.num_threads, current_settings())
        work = max(len(train), self.bsize * (self.num_candidates + 1))
        journal = open_journal(
            checkpoint,
            optimizer=type(self).__name__,
            fingerprint={
                "program": fingerprint_program(student),
                "trainset": fingerprint_examples(train),
                "settings": digest(self._settings(seed)),
            },
        )
        try:
            with coordinate(type(self).__name__, num_threads=threads, work=work) as crew:
                search = _Search(self, crew, threads, seed, journal)
                return search.run(student, train)
        finally:
            if journal is not None:
                journal.close()
                logger.info(
                    "SIMBA checkpoint: %d units replayed, %d recorded",
                    journal.replayed,
                    journal.recorded,
                )

    def _settings(self, seed: int) -> dict[str, Any]:
        """What a checkpoint must agree on (functions and LMs by name)."""
        names = ("bsize", "num_candidates", "max_steps", "max_demos", "demo_input_field_maxlen")
        values: dict[str, Any] = {name: getattr(self, name) for name in names}
        values["temperatures"] = [self.temperature_for_sampling, self.temperature_for_candidates]
        values["metric"] = getattr(self.metric, "__qualname__", type(self.metric).__qualname__)
        values["prompt_model"] = getattr(self.prompt_model, "model", None)
        values["teacher"] = sorted((self.teacher_settings or {}).keys())
        values["seed"] = seed
        return values


class _Search:
    """One SIMBA compile's state (the compile's thread)."""

    def __init__(
        self,
        opt: SIMBA,
        crew: Coordination,
        threads: int,
        seed: int,
        journal: Journal | None,
    ) -> None:
        self.opt = opt
        self.journal = journal
        self.units = 0
        self.crew = crew
        self.threads = threads
        self.rng = random.Random(seed)
        # DSPy draws the demo drops from a second generator (numpy's) with the same seed;
        # a second stream here too keeps ``rng``'s draws in step with DSPy's.
        self.rng_drops = random.Random(seed)
        self.programs: list[Any] = []
        self.scores: dict[int, list[float]] = {}
        self.shipper: Any = None
        if resolve_backend() == "ray":
            from dspex.programs._ray._bodies import SIMBABodies

            self.shipper = SIMBABodies(opt.metric)  # ships the metric, or a clear error

    # -- the pool of programs ----------------------------------------------------------

    def average(self, idx: int) -> float:
        scores = self.scores.get(idx, [])
        return sum(scores) / len(scores) if scores else 0.0

    def top_k_plus_baseline(self, k: int) -> list[int]:
        ranked = sorted(self.programs, key=lambda p: self.average(p.simba_idx), reverse=True)
        top = [p.simba_idx for p in ranked[:k]]
        if 0 not in top and top:
            top[-1] = 0
        return list(dict.fromkeys(top))

    def softmax_sample(self, idxs: list[int], temperature: float) -> int:
        weights = [math.exp(self.average(i) / temperature) for i in idxs]
        if sum(weights) <= 0:
            return self.rng.choice(idxs)
        return self.rng.choices(idxs, weights=weights, k=1)[0]

    def register(self, program: Any, scores: list[float]) -> None:
        program.simba_idx = len(self.programs)
        self.programs.append(program)
        self.scores[program.simba_idx] = scores

    # -- running -------------------------------------------------------------------------

    def execute(self, pairs: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
        """Run (program, example) pairs on the pool; DSPy's wrapped-program records, in order."""
        self.units += 1
        unit, ask = f"execute:{self.units}", ""
        if self.journal is not None:
            ask = digest([[fingerprint_program(p), dict(x)] for p, x in pairs])
            found, saved = self.journal.replay(unit, ask)
            if found:
                return [
                    revive_record(record, pair) for record, pair in zip(saved, pairs, strict=True)
                ]
        records: list[dict[str, Any]] = []
        run, jobs = self._runner(pairs)
        with self.crew.stream(run, jobs, num_threads=self.threads) as results:
            for result in results:
                if not result.ok:
                    if isinstance(result.error, UsageError):
                        raise result.error
                    example = pairs[result.index][1]
                    records.append(
                        {"prediction": None, "trace": [], "score": 0.0, "example": example,
                         "output_metadata": {}}
                    )  # fmt: skip
                else:
                    records.append(result.value)
        if self.journal is not None:
            self.journal.record(
                unit,
                ask,
                [_preserve(record, pair) for record, pair in zip(records, pairs, strict=True)],
            )
        return records

    def _runner(self, pairs: list[tuple[Any, Any]]) -> tuple[Callable[[Any], Any], list[Any]]:
        """The pool body and its items for ``pairs``, locally or on the Ray crew.

        On Ray each distinct program ships once (here, in the compile's
        thread); a worker sends the record back plain and it is revived on
        the driver's program, as a journal replay is.
        """
        metric = self.opt.metric
        if self.shipper is None:
            return functools.partial(run_pair, metric), list(pairs)
        jobs = [(self.shipper.body(program), (program, example)) for program, example in pairs]
        return _run_remote, jobs

    def models(self, baseline: Any) -> list[Any]:
        """``num_candidates`` fresh rollouts of the program's LM (the teacher's first)."""
        lm = _lm_of(baseline) or current_settings().get("lm")
        if lm is None:
            raise UsageError("SIMBA.compile: no LM; call dspex.configure(lm=dspex.LM(...)) first")
        start = int((getattr(lm, "kwargs", None) or {}).get("rollout_id", 0) or 0)
        ids = [start + i for i in range(self.opt.num_candidates)]
        models: list[Any] = []
        teacher = self.opt.teacher_settings
        if teacher:
            teacher_lm = teacher.get("lm") or lm
            models.append(_with_rollout(teacher_lm, ids[0], temperature=None))
            ids = ids[1:]
        models.extend(rollout_lm(lm, i) for i in ids)
        return models

    # -- the loop ------------------------------------------------------------------------

    def run(self, student: Any, trainset: list[Any]) -> Any:
        opt = self.opt
        rng = self.rng
        if self.shipper is not None:
            self.shipper.body(student)  # it ships, or a clear error before any work
        baseline = student.deepcopy()
        self.register(baseline, [])
        winners = [baseline]
        order = list(range(len(trainset)))
        rng.shuffle(order)
        trial_logs: dict[int, dict[str, Any]] = {}
        bar = _bar(opt.max_steps)
        try:
            best_seen = self._steps(trainset, order, winners, trial_logs, bar)
        finally:
            if bar is not None:
                bar.close()
        logger.info("SIMBA: best minibatch score %.3f", best_seen)
        return self._finish(trainset, winners, trial_logs)

    def _steps(
        self,
        trainset: list[Any],
        order: list[int],
        winners: list[Any],
        trial_logs: dict[int, dict[str, Any]],
        bar: Any,
    ) -> float:
        opt, rng = self.opt, self.rng
        cursor = 0
        best_seen = 0.0
        for step in range(opt.max_steps):
            trial_logs[step] = {}
            if cursor + opt.bsize > len(trainset):
                rng.shuffle(order)
                cursor = 0
            batch = [trainset[i] for i in order[cursor : cursor + opt.bsize]]
            cursor += opt.bsize

            # 1. Sample trajectories: each rollout model x each example, programs by softmax.
            models = self.models(self.programs[0])
            top = self.top_k_plus_baseline(opt.num_candidates)
            predictor2name: dict[int, str] = {}
            pairs = []
            for model in models:
                for example in batch:
                    chosen = self.softmax_sample(top, opt.temperature_for_sampling)
                    system = self.programs[chosen].deepcopy()
                    system.set_lm(model)
                    for name, predictor in system.named_predictors():
                        predictor2name[id(predictor)] = name
                    pairs.append((system, example))
            outputs = self.execute(pairs)

            # 2. Buckets per example, most informative first.
            all_scores = [float(o["score"]) for o in outputs]
            p10, p90 = percentile(all_scores, 10), percentile(all_scores, 90)
            buckets = []
            for idx in range(len(batch)):
                bucket = sorted(outputs[idx :: len(batch)], key=lambda o: o["score"], reverse=True)
                best, worst = float(bucket[0]["score"]), float(bucket[-1]["score"])
                mean = sum(o["score"] for o in bucket) / len(bucket)
                buckets.append((bucket, (best - worst, best, best - mean)))
            buckets.sort(key=lambda b: b[1], reverse=True)
            logger.info(
                "SIMBA step %d: baseline minibatch score %.3f",
                step + 1,
                sum(all_scores) / len(all_scores),
            )

            # 3. New candidates from the top buckets.
            candidates = []
            for bucket, _stats in buckets:
                source = self.softmax_sample(
                    self.top_k_plus_baseline(opt.num_candidates), opt.temperature_for_candidates
                )
                system = self.programs[source].deepcopy()
                name2predictor = dict(system.named_predictors())
                counts = [len(p.demos) for p in name2predictor.values()]
                num_demos = max(counts) if counts else 0
                cap = opt.max_demos if opt.max_demos > 0 else 3
                drop = max(poisson(self.rng_drops, num_demos / cap), int(num_demos >= cap))
                drop = min(drop, num_demos)
                dropped = {rng.randrange(num_demos) for _ in range(drop)}
                for predictor in name2predictor.values():
                    predictor.demos = [d for i, d in enumerate(predictor.demos) if i not in dropped]
                strategy = rng.choice(opt.strategies)
                logger.info("SIMBA step %d: %s", step + 1, getattr(strategy, "__name__", strategy))
                try:
                    strategy(
                        bucket,
                        system,
                        predictor2name=predictor2name,
                        name2predictor=name2predictor,
                        batch_10p_score=p10,
                        batch_90p_score=p90,
                        prompt_model=opt.prompt_model,
                    )
                except Exception as exc:
                    logger.error("SIMBA: the strategy failed: %s", exc)
                    continue
                candidates.append(system)
                if len(candidates) >= opt.num_candidates + 1:
                    break

            # 4. Score the candidates on the same minibatch.
            results = self.execute([(system, ex) for system in candidates for ex in batch])
            size = len(batch)
            scored = [
                [float(r["score"]) for r in results[i * size : (i + 1) * size]]
                for i in range(len(candidates))
            ]
            means = [sum(s) / len(s) for s in scored]
            if means:
                winners.append(candidates[means.index(max(means))].deepcopy())
            for system, scores in zip(candidates, scored, strict=True):
                self.register(system, scores)
            logger.info("SIMBA step %d: candidate scores %s", step + 1, means)
            best_seen = max([best_seen, *means])
            if bar is not None:
                bar.set_postfix(best=f"{best_seen:.3f}")
                bar.update(1)
        return best_seen

    def _finish(
        self, trainset: list[Any], winners: list[Any], trial_logs: dict[int, dict[str, Any]]
    ) -> Any:
        opt = self.opt

        # 5. Score a spread of the step winners on the whole trainset.
        last = len(winners) - 1
        slots = opt.num_candidates + 1
        picks = [0] * slots if last < 1 else [round(i * last / (slots - 1)) for i in range(slots)]
        finalists = [winners[i].deepcopy() for i in dict.fromkeys(picks)]
        results = self.execute([(system, ex) for system in finalists for ex in trainset])
        n = len(trainset)
        finals = []
        for i in range(len(finalists)):
            scores = [float(r["score"]) for r in results[i * n : (i + 1) * n]]
            finals.append(sum(scores) / len(scores) if scores else 0.0)
            if i != 0:
                trial_logs[i - 1]["train_score"] = finals[-1]
        best = finals.index(max(finals)) if finals else 0
        program = finalists[best].deepcopy()
        program.candidate_programs = sorted(
            ({"score": s, "program": p} for s, p in zip(finals, finalists, strict=True)),
            key=lambda c: c["score"],
            reverse=True,
        )
        program.trial_logs = trial_logs
        logger.info("SIMBA: final trainset scores %s; best at %d", finals, best)
        return program


def _run_remote(job: tuple[Callable[[Any], Any], tuple[Any, Any]]) -> dict[str, Any]:
    body, pair = job
    return revive_record(body(pair[1]), pair)


def _preserve(record: dict[str, Any], pair: tuple[Any, Any]) -> Any:
    """A run's record as plain values: trace entries name their predictor."""
    return plain_record(record, pair[0])


def _bar(steps: int) -> Any:
    """A tqdm bar over the steps (best minibatch score so far), when stderr is a terminal."""
    if not progress_enabled(None):
        return None
    import tqdm

    return tqdm.tqdm(total=steps, desc="SIMBA steps", dynamic_ncols=True)


def _lm_of(program: Any) -> Any:
    try:
        return program.get_lm()
    except UsageError:  # predictors with different LMs: DSPy uses the configured one then
        return None


def _with_rollout(lm: Any, rollout_id: int, *, temperature: float | None) -> Any:
    copy = getattr(lm, "copy", None)
    overrides: dict[str, Any] = {"rollout_id": rollout_id}
    if temperature is not None:
        overrides["temperature"] = temperature
    if callable(copy):
        try:
            return copy(**overrides)
        except TypeError:
            pass
    return rollout_lm(lm, rollout_id)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; ``lam`` here is at most a few)."""
    if lam <= 0:
        return 0
    limit, count, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count
