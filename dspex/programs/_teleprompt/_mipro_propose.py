"""MIPROv2 step 2: instruction candidates for each predictor, from a grounded proposer.

The proposer is itself a small LM program written with dspex's own
signatures and ``Predict``, so it works with any adapter and with
``DummyLM``. Each proposal may be grounded in (DSPy's four switches):

- the data: a summary of the trainset the prompt model writes first, by
  reading it in batches of ``view_data_batch_size`` (``data_aware``);
- the program: its code and the predictor's place in it, which the prompt
  model describes before proposing (``program_aware``);
- a tip drawn at random, e.g. "keep it short" or "use a persona"
  (``tip_aware``);
- up to three bootstrapped demos of the predictor (``fewshot_aware``).

Candidate 0 of every predictor is its current instruction. Candidate ``k``
(``k >= 1``) is proposed with demo set ``k`` first in view. Each proposal
uses a fresh rollout of the prompt model (a random ``rollout_id``, so not a
cached answer, at ``init_temperature``). All random draws are made up front
in a fixed order; the proposals then run in parallel on the compile's pool
and come back in that order, so the candidates are the same on every run
given a deterministic prompt model.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Final

from dspex._record import Record
from dspex.programs._fields import InputField, OutputField
from dspex.programs._predict import Predict
from dspex.programs._settings import context
from dspex.programs._signature import Signature, make_signature
from dspex.programs._teleprompt._attempt import _RolloutLM

__all__ = ["TIPS", "GroundedProposer", "program_code", "strip_label"]

logger = logging.getLogger("dspex.programs")

TIPS: Final[Mapping[str, str]] = {
    "none": "",
    "creative": "Be inventive: an unexpected angle on the instruction may work best.",
    "simple": "Make the instruction short and plain.",
    "description": "Make the instruction detailed, spelling out what a good output needs.",
    "high_stakes": "Frame the task as a high-stakes situation that the model must get right.",
    "persona": 'Open the instruction with a persona suited to the task ("You are a ...").',
}

DEMOS_IN_CONTEXT: Final = 3
"""Bootstrapped demos shown to the proposer per proposal."""

_SUMMARY_CALLS: Final = 10
"""At most this many batches of the trainset are read for the data summary."""

_COMPLETE_SKIPS: Final = 5
"""The summary stops reading once the model said five times it has nothing to add."""

_NO_DEMOS: Final = "No task demos provided."


class DescribeData(Signature):
    """Read these examples from a dataset and note what holds for most or all of them:
    topics, content, format, length, style. Also guess what task the data is for."""

    examples = InputField(desc="a batch of data points from the dataset")
    observations = OutputField(desc="patterns that hold for most or all of the examples")


class DescribeMoreData(Signature):
    """Read these examples from a dataset. You already noted some observations about
    earlier batches: add new ones that hold for most or all of the data, or answer
    COMPLETE if the observations already cover it."""

    examples = InputField(desc="a further batch of data points from the dataset")
    prior_observations = InputField(desc="what was noted about earlier batches")
    observations = OutputField(desc="new patterns, or COMPLETE if there is nothing to add")


class SummarizeObservations(Signature):
    """Condense these observations about a dataset into two or three sentences that
    keep only the most important points."""

    observations = InputField(desc="observations made about the dataset")
    summary = OutputField(desc="a two to three sentence summary of the key observations")


class DescribeProgram(Signature):
    """Here is the code of a program that solves a task with language model calls.
    Say what task it is for and how it goes about solving it."""

    program_code = InputField(desc="the program's code")
    program_example = InputField(desc="an example of the program at work")
    program_description = OutputField(desc="the task the program solves, and how")


class DescribeModule(Signature):
    """Here is the code of a program that solves a task with language model calls.
    Describe the role of one of its modules in the program."""

    program_code = InputField(desc="the program's code")
    program_example = InputField(desc="an example of the program at work")
    program_description = InputField(desc="the task the program solves, and how")
    module = InputField(desc="the module to describe")
    module_description = OutputField(desc="what this module does for the program")


_PROPOSE_TASK = (
    "Learn from the information below about a task that a language model program "
    "solves, then write a new instruction for one of its modules: an instruction that "
    "will prompt the language model to do this module's job better."
)


@cache
def instruction_signature(
    data_aware: bool, program_aware: bool, fewshot_aware: bool, with_tip: bool
) -> type[Signature]:
    """The proposal signature for this mix of grounding (one class per mix)."""
    fields: dict[str, Any] = {}
    if data_aware:
        fields["dataset_description"] = InputField(desc="a summary of the dataset")
    if program_aware:
        fields["program_code"] = InputField(desc="the program's code")
        fields["program_description"] = InputField(desc="the task the program solves, and how")
        fields["module"] = InputField(desc="the module to write an instruction for")
        fields["module_description"] = InputField(desc="the module's role in the program")
    if fewshot_aware:
        fields["task_demos"] = InputField(desc="example inputs and outputs of the module")
    fields["basic_instruction"] = InputField(desc="the module's current instruction")
    if with_tip:
        fields["tip"] = InputField(desc="a hint on how to write the new instruction")
    fields["proposed_instruction"] = OutputField(
        desc="the new instruction for the language model doing this module's job"
    )
    return make_signature(fields, _PROPOSE_TASK, "GenerateSingleModuleInstruction")


class _Proposal(Record):
    """One proposal to make: for predictor ``predictor``, candidate number ``slot``."""

    predictor: int
    slot: int
    tip: str
    rollout_id: int


class GroundedProposer:
    """Proposes instruction candidates for every predictor of ``program`` (compiling thread).

    ``crew`` is the compile's :class:`~._coordinator.Coordination`; the
    prompt model's calls run as items on its pool. ``calls`` counts the
    prompt model calls made.
    """

    def __init__(
        self,
        *,
        program: Any,
        trainset: Sequence[Any],
        prompt_model: Any,
        crew: Any,
        num_threads: int,
        rng: random.Random,
        init_temperature: float,
        view_data_batch_size: int = 10,
        data_aware: bool = True,
        program_aware: bool = True,
        tip_aware: bool = True,
        fewshot_aware: bool = True,
        verbose: bool = False,
    ) -> None:
        self._program = program
        self._names = [name for name, _ in program.named_predictors()]
        self._predictors = program.predictors()
        self._trainset = list(trainset)
        self._lm = prompt_model
        self._crew = crew
        self._threads = num_threads
        self._rng = rng
        self._temperature = init_temperature
        self._batch = view_data_batch_size
        self._data_aware = data_aware
        self._program_aware = program_aware
        self._tip_aware = tip_aware
        self._fewshot_aware = fewshot_aware
        self._verbose = verbose
        self._summary = ""
        self._code = program_code(program) if program_aware else ""
        self.calls = 0

    def propose(
        self, demo_candidates: Mapping[int, Sequence[Sequence[Any]]] | None, n: int
    ) -> dict[int, list[str]]:
        """``n`` candidates per predictor index (fewer with fewer demo sets); 0 is the current."""
        if self._data_aware and self._trainset:
            self._summarize_data()
        demos = demo_candidates or None
        count = min(n, max(len(demos[0]), 1)) if demos is not None else n
        plans = [
            _Proposal(i, slot, self._draw_tip(), self._rng.randint(0, 10**9))
            for i in range(len(self._predictors))
            for slot in range(1, count)
        ]
        candidates = {i: [p.signature.instructions] for i, p in enumerate(self._predictors)}
        failures: list[BaseException] = []

        def one(plan: _Proposal) -> tuple[str, int]:
            return self._propose_one(plan, demos)

        with self._crew.stream(one, plans, num_threads=self._threads) as results:
            for result in results:
                plan = plans[result.index]
                if result.ok:
                    instruction, calls = result.value
                    self.calls += calls
                    candidates[plan.predictor].append(instruction)
                    continue
                failures.append(result.error)
                logger.warning(
                    "MIPROv2: proposing instruction %d for predictor %r failed (%s: %s); "
                    "going on without it",
                    plan.slot,
                    self._names[plan.predictor],
                    type(result.error).__name__,
                    result.error,
                )
        if failures and len(failures) == len(plans):
            failures[0].add_note("MIPROv2: every instruction proposal failed; check prompt_model")
            raise failures[0]
        return candidates

    # -- grounding ---------------------------------------------------------------------------

    def _draw_tip(self) -> str:
        if not self._tip_aware:
            return ""
        key = self._rng.choice(list(TIPS))
        if self._verbose:
            logger.info("Selected tip: %s", key)
        return TIPS[key]

    def _summarize_data(self) -> None:
        """The dataset summary, written by the prompt model in one item on the pool."""
        with self._crew.stream(lambda _: self._summary_calls(), [None], num_threads=1) as results:
            [result] = list(results)
        if not result.ok:
            logger.warning(
                "MIPROv2: summarizing the trainset failed (%s: %s); proposing without a "
                "data summary",
                type(result.error).__name__,
                result.error,
            )
            self._data_aware = False
            return
        self._summary, calls = result.value
        self.calls += calls
        if self._verbose:
            logger.info("DATA SUMMARY: %s", self._summary)

    def _summary_calls(self) -> tuple[str, int]:
        data, step = self._trainset, self._batch
        with context(lm=self._lm):
            first = Predict(DescribeData, n=1, temperature=1.0)
            observations = str(first(examples=examples_text(data[:step])).observations)
            calls, skips = 1, 0
            more = Predict(DescribeMoreData, n=1, temperature=1.0)
            try:
                for start in range(step, len(data), step):
                    if calls >= _SUMMARY_CALLS:
                        break
                    calls += 1
                    added = str(
                        more(
                            prior_observations=observations,
                            examples=examples_text(data[start : start + step]),
                        ).observations
                    )
                    if added.strip()[:8].upper() == "COMPLETE":
                        skips += 1
                        if skips >= _COMPLETE_SKIPS:
                            break
                        continue
                    observations = f"{observations}\n{added}"
            except Exception as exc:  # keep what was observed so far, as DSPy does
                logger.warning("MIPROv2: reading more of the trainset failed: %s", exc)
            summarize = Predict(SummarizeObservations, n=1, temperature=1.0)
            summary = summarize(observations=observations).summary
        return strip_label(str(summary)), calls + 1

    def _task_demos(
        self, plan: _Proposal, demos: Mapping[int, Sequence[Sequence[Any]]] | None
    ) -> str:
        """Up to three bootstrapped demos, from demo set ``slot`` onwards (wrapping round)."""
        if demos is None:
            return _NO_DEMOS
        sets = list(demos[plan.predictor])
        ordered = sets[plan.slot :] + sets[: plan.slot]
        signature = self._predictors[plan.predictor].signature
        shown: list[str] = []
        for demo_set in ordered:
            for demo in demo_set:
                if "augmented" in _keys(demo):
                    shown.append(demo_text(signature, demo))
                    if len(shown) >= DEMOS_IN_CONTEXT:
                        return "\n\n".join(shown)
        return "\n\n".join(shown) or _NO_DEMOS

    def _propose_one(
        self, plan: _Proposal, demos: Mapping[int, Sequence[Sequence[Any]]] | None
    ) -> tuple[str, int]:
        """One proposal (runs in a pool worker): ``(instruction, prompt model calls)``."""
        predictor = self._predictors[plan.predictor]
        task_demos = self._task_demos(plan, demos) if self._fewshot_aware else _NO_DEMOS
        inputs: dict[str, Any] = {}
        calls = 0
        with context(lm=_rollout(self._lm, plan.rollout_id, self._temperature)):
            if self._data_aware:
                inputs["dataset_description"] = self._summary
            if self._program_aware:
                described, calls = self._describe(plan.predictor, task_demos)
                inputs.update(described)
            if self._fewshot_aware:
                inputs["task_demos"] = task_demos
            inputs["basic_instruction"] = predictor.signature.instructions
            if plan.tip:
                inputs["tip"] = plan.tip
            signature = instruction_signature(
                self._data_aware, self._program_aware, self._fewshot_aware, bool(plan.tip)
            )
            proposed = Predict(signature)(**inputs).proposed_instruction
        instruction = strip_label(str(proposed))
        if self._verbose:
            logger.info("PROPOSED INSTRUCTION: %s", instruction)
        return instruction, calls + 1

    def _describe(self, index: int, task_demos: str) -> tuple[dict[str, str], int]:
        """The program-aware inputs: what the program and this predictor are for."""
        predictor = self._predictors[index]
        signature = predictor.signature
        module = (
            f"{self._names[index]}: {type(predictor).__name__}"
            f"({', '.join(signature.input_fields)}) -> {', '.join(signature.output_fields)}"
        )
        described = {
            "program_code": self._code,
            "program_description": "Not available",
            "module": module,
            "module_description": "Not provided",
        }
        calls = 0
        try:
            calls += 1
            program = Predict(DescribeProgram)(program_code=self._code, program_example=task_demos)
            described["program_description"] = strip_label(str(program.program_description))
            calls += 1
            role = Predict(DescribeModule)(
                program_code=self._code,
                program_example=task_demos,
                program_description=described["program_description"],
                module=module,
            )
            described["module_description"] = strip_label(str(role.module_description))
        except Exception as exc:  # DSPy goes on without the descriptions
            logger.warning("MIPROv2: describing the program failed (%s); going on without", exc)
        return described, calls


# -- text helpers ------------------------------------------------------------------------------


def _rollout(lm: Any, rollout_id: int, temperature: float) -> Any:
    """A fresh rollout of ``lm``: ``lm.copy(rollout_id=..., temperature=...)`` as in DSPy."""
    copy = getattr(lm, "copy", None)
    if callable(copy):
        try:
            return copy(rollout_id=rollout_id, temperature=temperature)
        except TypeError:  # a copy() that takes no overrides
            pass
    return _RolloutLM(lm, {"rollout_id": rollout_id, "temperature": temperature})


def _keys(demo: Any) -> list[str]:
    keys = getattr(demo, "keys", None)
    return list(keys()) if callable(keys) else []


def demo_text(signature: type[Signature], demo: Any) -> str:
    """A demo as ``Prefix: value`` lines, in the signature's field order."""
    lines = []
    for name, field in signature.fields.items():
        if name in _keys(demo):
            lines.append(f"{field.prefix} {demo[name]}")
    return "\n".join(lines)


def examples_text(examples: Sequence[Any]) -> str:
    """Examples as numbered blocks, inputs marked, in a stable order."""
    blocks = []
    for number, example in enumerate(examples, 1):
        inputs = (
            set(_keys(example.inputs())) if callable(getattr(example, "inputs", None)) else set()
        )
        lines = [
            f"{name}{' (input)' if name in inputs else ''}: {example[name]}"
            for name in _keys(example)
        ]
        blocks.append(f"Example {number}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


_LABEL = re.compile(r"^[\s*]*(?:[\w'\-]+\s+){0,4}[\w'\-]+:\s*")


def strip_label(text: str) -> str:
    """``text`` without a leading label like ``Proposed Instruction:`` or surrounding quotes."""
    return _LABEL.sub("", text, count=1).strip().strip('"').strip()


def program_code(program: Any) -> str:
    """What the proposer shows of the program: its class's source, if it is user code,
    and every predictor with its signature."""
    import inspect
    import textwrap

    parts = []
    cls = type(program)
    if not cls.__module__.startswith("dspex."):
        # A class defined in a REPL or generated on the fly has no source: skip it.
        with contextlib.suppress(OSError, TypeError):
            parts.append(textwrap.dedent(inspect.getsource(cls)).rstrip())
    parts.append("# The language model calls (predictors) of this program:")
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        parts.append(f"{name} = {type(predictor).__name__}({signature.signature!r})")
    return "\n".join(parts)
