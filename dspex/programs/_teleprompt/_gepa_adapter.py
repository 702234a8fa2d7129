"""The GEPAAdapter dspex gives the ``gepa`` package: how a candidate runs, is judged and evolves.

A candidate is ``{predictor name: instruction}``. ``gepa``'s engine asks the
adapter to evaluate candidates on batches (``evaluate``/``batch_evaluate``),
to turn traced runs into a reflective dataset, and to propose new texts.
Every (candidate, example) pair of one request becomes one item on the
compile's coordinator pool, so the candidates of a multi-proposal step and
the examples of a full valset evaluation all run at once (the LM cache and
single-flight sit underneath). Proposals run in the engine's thread through
a small dspex program on the reflection LM.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._adapters import JSONAdapter
from dspex.programs._backend import resolve_backend
from dspex.programs._fields import InputField, OutputField
from dspex.programs._predict import Predict
from dspex.programs._prediction import Prediction
from dspex.programs._settings import context
from dspex.programs._signature import Signature
from dspex.programs._teleprompt._checkpoint import Journal, digest
from dspex.programs._teleprompt._coordinator import Coordination
from dspex.programs._teleprompt._gepa_speculate import Speculator
from dspex.programs._teleprompt._rollouts import Rollout as _Rollout
from dspex.programs._teleprompt._rollouts import plain_rollout, revive_rollout, run_rollout

__all__ = ["DspexGEPAAdapter", "InstructionProposer", "ProposeInstruction", "score_of"]

logger = logging.getLogger("dspex.programs")


class ProposeInstruction(Signature):
    """I provided an assistant with instructions to perform a task for me. You are given those instructions, along with examples of different task inputs provided to the assistant, the assistant's response for each of them, and some feedback on how the assistant's response could be better.

    Your task is to write a new instruction for the assistant.

    Read the inputs carefully and identify the input format and infer a detailed description of the task I wish to solve with the assistant.

    Read all the assistant responses and the corresponding feedback. Identify all niche and domain-specific factual information about the task and include it in the instruction, as a lot of it may not be available to the assistant in the future. The assistant may have used a generalizable strategy to solve the task; if so, include that in the instruction as well."""  # noqa: E501

    current_instruction: str = InputField(desc="The instructions I provided to the assistant.")
    examples_with_feedback: list[dict[str, Any]] = InputField(
        desc="Task inputs provided to the assistant, the assistant's response for each, "
        "and feedback on how the response could be better."
    )
    new_instruction: str = OutputField(desc="The new instruction for the assistant.")


class InstructionProposer:
    """GEPA's default proposer: one reflection-LM call per component, through JSONAdapter."""

    def __init__(self) -> None:
        self.propose = Predict(ProposeInstruction)

    def __call__(
        self,
        candidate: Mapping[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: Sequence[str],
    ) -> dict[str, str]:
        results: dict[str, str] = {}
        for name in components_to_update:
            if name not in candidate or name not in reflective_dataset:
                continue
            with context(adapter=JSONAdapter()):
                prediction = self.propose(
                    current_instruction=candidate[name],
                    examples_with_feedback=[dict(row) for row in reflective_dataset[name]],
                )
            draft = str(prediction.new_instruction).strip()
            if not draft:
                raise ValueError(f"the reflection LM returned an empty instruction for {name!r}")
            results[name] = draft
        return results


def _preserve(rollouts: list[_Rollout], names: list[dict[int, str]]) -> Any:
    """Rollouts as plain values: trace entries name their predictor instead of holding it."""
    return [plain_rollout(r, names[r.group]) for r in rollouts]


def _revive(saved: list[Any], programs: list[Any]) -> list[_Rollout]:
    """Journaled rollouts with their trace entries pointing at this replay's predictors."""
    by_name = [dict(program.named_predictors()) for program in programs]
    return [revive_rollout(entry, by_name) for entry in saved]


def score_of(value: Any) -> tuple[float | None, dict[str, float]]:
    """(score, objective scores) of a metric result: a number or a Prediction with ``score``."""
    if value is None:
        return None, {}
    if isinstance(value, Prediction) or hasattr(value, "score"):
        objectives = value.get("objective_scores") if hasattr(value, "get") else None
        return float(value.score), dict(objectives or {})
    return float(value), {}


class DspexGEPAAdapter:
    """``gepa.GEPAAdapter`` over a dspex program (the engine's thread calls it)."""

    def __init__(
        self,
        student: Any,
        *,
        metric: Callable[..., Any],
        crew: Coordination,
        num_threads: int,
        failure_score: float,
        rng: random.Random,
        reflection_lm: Any,
        instruction_proposer: Callable[..., dict[str, str]] | None,
        warn_on_score_mismatch: bool,
        journal: Journal | None = None,
        speculator: Speculator | None = None,
    ) -> None:
        self.student = student
        self.speculator = speculator
        self.metric = metric
        self.crew = crew
        self.num_threads = num_threads
        self.failure_score = failure_score
        self.rng = rng
        self.reflection_lm = reflection_lm
        self.proposer = instruction_proposer or InstructionProposer()
        self.warn_on_score_mismatch = warn_on_score_mismatch
        self.metric_calls = 0
        self.journal = journal
        self._units = {"eval": 0, "propose": 0}
        self.remote = resolve_backend() == "ray"
        if self.remote:  # the student and the metric ship, or a clear error before any work
            from dspex.programs._ray._bodies import gepa_body

            gepa_body(student, metric, capture_traces=False)

    # -- programs ------------------------------------------------------------------------

    def build_program(self, candidate: Mapping[str, str]) -> Any:
        """A copy of the student with the candidate's instructions."""
        program = self.student.deepcopy()
        for name, predictor in program.named_predictors():
            if name in candidate:
                predictor.signature = predictor.signature.with_instructions(candidate[name])
        return program

    # -- evaluation ----------------------------------------------------------------------

    def evaluate(
        self, batch: Sequence[Any], candidate: dict[str, str], capture_traces: bool = False
    ) -> Any:
        return self._evaluate([(candidate, list(batch))], capture_traces)[0]

    def batch_evaluate(
        self, items: Sequence[tuple[dict[str, str], Sequence[Any]]], *, capture_traces: bool = True
    ) -> list[Any]:
        return self._evaluate([(c, list(b)) for c, b in items], capture_traces)

    def _evaluate(
        self, items: Sequence[tuple[dict[str, str], list[Any]]], capture_traces: bool
    ) -> list[Any]:
        programs = [self.build_program(candidate) for candidate, _ in items]
        names = [{id(p): n for n, p in program.named_predictors()} for program in programs]
        jobs = [
            (group, programs[group], example)
            for group, (_, batch) in enumerate(items)
            for example in batch
        ]
        run = self._runner(programs, capture_traces)

        if self.speculator is not None:
            for candidate, batch in items:
                self.speculator.saw(
                    json.dumps(candidate, sort_keys=True),
                    functools.partial(self.build_program, candidate),
                    batch,
                )
        unit, ask = self._unit("eval"), ""
        if self.journal is not None:
            ask = digest([[c, [dict(x) for x in b]] for c, b in items] + [capture_traces])
            found, saved = self.journal.replay(unit, ask)
            if found:
                self.metric_calls += len(jobs)
                return self._assemble(items, _revive(saved, programs), names, capture_traces)
        rollouts: list[_Rollout] = []
        with self.crew.stream(run, jobs, num_threads=self.num_threads) as results:
            for result in results:
                if result.ok:
                    rollouts.append(result.value)
                elif isinstance(result.error, UsageError):
                    raise result.error
                else:  # the worker crashed twice on it: a failure, like an exception
                    rollouts.append(_Rollout(jobs[result.index][0], None, None, None, True))
        self.metric_calls += len(jobs)
        if self.journal is not None:
            # Traces only when the engine asked for them (they are most of a record's size).
            kept = rollouts if capture_traces else [r._replace(trace=None) for r in rollouts]
            self.journal.record(unit, ask, _preserve(kept, names))
        return self._assemble(items, rollouts, names, capture_traces)

    def _runner(
        self, programs: list[Any], capture_traces: bool
    ) -> Callable[[tuple[int, Any, Any]], _Rollout]:
        """The pool body for one request's (group, program, example) jobs.

        On the Ray backend each candidate ships once (as a job) and each
        example runs on a worker; its rollout comes back plain and is revived
        on this request's programs, as a journal replay is.
        """
        metric = self.metric
        if not self.remote:

            def run(job: tuple[int, Any, Any]) -> _Rollout:
                group, program, example = job
                return run_rollout(program, metric, capture_traces, group, example)

            return run
        from dspex.programs._ray._bodies import gepa_body

        bodies = [gepa_body(p, metric, capture_traces=capture_traces) for p in programs]
        by_name = [dict(program.named_predictors()) for program in programs]

        def run_remote(job: tuple[int, Any, Any]) -> _Rollout:
            group, _, example = job
            return revive_rollout(bodies[group]((group, example)), by_name)

        return run_remote

    def _unit(self, kind: str) -> str:
        self._units[kind] += 1
        return f"{kind}:{self._units[kind]}"

    def _assemble(
        self,
        items: Sequence[tuple[dict[str, str], list[Any]]],
        rollouts: list[_Rollout],
        names: list[dict[int, str]],
        capture_traces: bool,
    ) -> list[Any]:
        from gepa.core.adapter import EvaluationBatch

        failure = self.failure_score
        batches: list[Any] = []
        start = 0
        for group, (_, batch) in enumerate(items):
            mine = rollouts[start : start + len(batch)]
            start += len(batch)
            outputs, scores, objectives, trajectories = [], [], [], []
            for position, rollout in enumerate(mine):
                score, objective = score_of(rollout.raw_score)
                outputs.append(rollout.prediction)
                scores.append(failure if score is None else score)
                objectives.append(objective)
                if capture_traces and not rollout.failed:
                    trajectories.append(
                        {
                            "example": batch[position],
                            "example_ind": position,
                            "prediction": rollout.prediction,
                            "trace": rollout.trace,
                            "score": rollout.raw_score,
                            "names": names[group],
                        }
                    )
            batches.append(
                EvaluationBatch(
                    outputs=outputs,
                    scores=scores,
                    trajectories=trajectories if capture_traces else None,
                    objective_scores=objectives if any(objectives) else None,
                )
            )
        return batches

    # -- reflection ----------------------------------------------------------------------

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Per component: the inputs, outputs and metric feedback of its traced calls."""
        dataset: dict[str, list[dict[str, Any]]] = {}
        for name in components_to_update:
            rows: list[dict[str, Any]] = []
            for data in eval_batch.trajectories or []:
                calls = [t for t in data["trace"] if data["names"].get(id(t[0])) == name]
                if not calls:
                    continue
                predictor, inputs, outputs = self.rng.choice(calls)
                feedback = self._feedback(name, data, (predictor, inputs, outputs))
                rows.append(
                    {
                        "Inputs": dict(inputs),
                        "Generated Outputs": dict(outputs),
                        "Feedback": feedback,
                    }
                )
            if rows:
                dataset[name] = rows
            else:
                logger.warning("GEPA: no reflective examples for %s", name)
        if not dataset:
            raise ValueError("GEPA: no traced predictor calls to reflect on in this minibatch")
        return dataset

    def _feedback(self, name: str, data: Mapping[str, Any], call: tuple[Any, Any, Any]) -> str:
        value = self.metric(data["example"], data["prediction"], data["trace"], name, [call])
        if hasattr(value, "feedback"):
            feedback = value.feedback
            score, _ = score_of(value)
        else:
            feedback, score = None, float(value)
        if feedback is None:
            feedback = f"This trajectory got a score of {score}."
        module_score, _ = score_of(data["score"])
        if score != module_score and self.warn_on_score_mismatch:
            logger.warning(
                "GEPA: the metric's score with pred_name=%r differs from its score for the whole "
                "program; GEPA uses the program-level score (pass warn_on_score_mismatch=False "
                "to silence this)",
                name,
            )
            self.warn_on_score_mismatch = False
        return str(feedback)

    def propose_new_texts(
        self,
        candidate: dict[str, str],
        reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
        components_to_update: list[str],
    ) -> dict[str, str]:
        unit, ask = self._unit("propose"), ""
        if self.journal is not None:
            ask = digest([candidate, components_to_update])
            found, saved = self.journal.replay(unit, ask)
            if found:
                return dict(saved)
        overrides = {"lm": self.reflection_lm} if self.reflection_lm is not None else {}
        with context(**overrides):
            texts = self.proposer(
                candidate=candidate,
                reflective_dataset=reflective_dataset,
                components_to_update=components_to_update,
            )
        if self.journal is not None:
            self.journal.record(unit, ask, dict(texts))
        return texts

    def get_adapter_state(self) -> dict[str, Any]:
        return {"rng_state": self.rng.getstate()}

    def set_adapter_state(self, state: Mapping[str, Any]) -> None:
        if "rng_state" in state:
            self.rng.setstate(state["rng_state"])
