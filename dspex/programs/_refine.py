"""``Refine``: BestOfN that learns from a low reward before the next attempt.

After an attempt scores below ``threshold`` (and attempts remain), Refine
works out advice for each predictor of the module and hands it to the next
attempt as an extra ``hint_`` input field on that attempt's private copy:

- when the reward function explains itself (returns ``score`` with a
  ``feedback`` text), that text is the hint for every predictor;
- otherwise an LM critic (the :class:`OfferFeedback` signature) reads the
  program's code, its trajectory and the reward and writes per-predictor
  advice, as DSPy's Refine does.

A critic that fails is logged and the next attempt keeps the previous hints.
"""

from __future__ import annotations

import inspect
import json
import logging
import textwrap
from typing import Any

from dspex.programs._best_of_n import RolloutSearch
from dspex.programs._fields import InputField, OutputField
from dspex.programs._settings import context, current_settings
from dspex.programs._signature import Signature

__all__ = ["OfferFeedback", "Refine"]

logger = logging.getLogger("dspex.programs")

_NO_SOURCE = "<source not available>"


class OfferFeedback(Signature):
    """A program's output scored below the target. Decide which of its modules are responsible,
    discussing each one's part in the shortfall. Then write, for every module, specific advice
    on how it should handle the same or similar input next time; write N/A for a module that is
    not to blame. A module will not see this run again, so the advice must stand on its own and
    be concrete enough to act on."""

    program_code: str = InputField(desc="Source code of the program under review")
    modules_defn: str = InputField(desc="Each module of the program with its inputs and outputs")
    program_inputs: str = InputField(desc="The inputs the program was called with")
    program_trajectory: str = InputField(
        desc="The program's execution: each module call with its inputs and outputs"
    )
    program_outputs: str = InputField(desc="What the program returned")
    reward_code: str = InputField(desc="Source code of the reward function that scored the outputs")
    target_threshold: float = InputField(desc="The reward the outputs had to reach")
    reward_value: float = InputField(desc="The reward the outputs got")
    module_names: list[str] = InputField(desc="The names of the modules to advise")
    discussion: str = OutputField(desc="Which modules went wrong, if any, and how")
    advice: dict[str, str] = OutputField(
        desc="Module name -> concrete advice: the situations where it erred, what the error was, "
        "and what to do instead in such situations; N/A when the module is not to blame"
    )


class Refine(RolloutSearch):
    """Like :class:`BestOfN`, and a below-threshold attempt yields hints for the next one.

    ``reward_fn(inputs, prediction)`` returns a number, or an object with
    ``score`` and optional ``feedback`` (used directly as the hint, with no
    critic call). ``threshold=None`` runs all ``N`` attempts.
    """

    def __init__(
        self,
        module: Any,
        N: int,  # noqa: N803 - DSPy's keyword
        reward_fn: Any,
        threshold: float | None,
        fail_count: int | None = None,
    ) -> None:
        super().__init__(module, N, reward_fn, threshold, fail_count)
        self.module_code = _source(type(module))
        code = _source(reward_fn)
        self.reward_fn_code = code if code != _NO_SOURCE else _source(type(reward_fn))

    def _next_hints(
        self,
        candidate: Any,
        kwargs: dict[str, Any],
        *,
        prediction: Any,
        trace: list[Any],
        score: float,
        feedback: str | None,
    ) -> dict[str, str] | None:
        named = candidate.named_predictors()
        if feedback:
            return {name: feedback for name, _ in named}
        critic, inputs = self._critic(candidate, kwargs, prediction, trace, score)
        try:
            with context(trace=[]):  # the critic is search machinery, not the program
                advice = critic(**inputs).advice
        except Exception as exc:
            return self._critic_failed(candidate, exc)
        return self._hints_from(candidate, advice)

    async def _anext_hints(
        self,
        candidate: Any,
        kwargs: dict[str, Any],
        *,
        prediction: Any,
        trace: list[Any],
        score: float,
        feedback: str | None,
    ) -> dict[str, str] | None:
        named = candidate.named_predictors()
        if feedback:
            return {name: feedback for name, _ in named}
        critic, inputs = self._critic(candidate, kwargs, prediction, trace, score)
        try:
            with context(trace=[]):  # the critic is search machinery, not the program
                advice = (await critic.acall(**inputs)).advice
        except Exception as exc:
            return self._critic_failed(candidate, exc)
        return self._hints_from(candidate, advice)

    def _critic(
        self,
        candidate: Any,
        kwargs: dict[str, Any],
        prediction: Any,
        trace: list[Any],
        score: float,
    ) -> tuple[Any, dict[str, Any]]:
        """The feedback critic (a Predict of OfferFeedback) and its inputs for one attempt."""
        named = candidate.named_predictors()
        names = {id(p): name for name, p in named}
        trajectory = [
            {"module_name": names.get(id(p), type(p).__name__), "inputs": i, "outputs": dict(o)}
            for p, i, o in trace
        ]
        critic_inputs = {
            "program_code": self.module_code,
            "modules_defn": describe_modules(candidate),
            "program_inputs": _dump(kwargs),
            "program_trajectory": _dump(trajectory),
            "program_outputs": _dump(
                dict(prediction.items()) if hasattr(prediction, "items") else prediction
            ),
            "reward_code": self.reward_fn_code,
            "target_threshold": self.threshold,
            "reward_value": score,
            "module_names": [name for name, _ in named],
            "lm": current_settings().get("lm") or self._base_lm(),
        }
        from dspex.programs._predict import Predict

        return Predict(OfferFeedback), critic_inputs

    def _critic_failed(self, candidate: Any, exc: Exception) -> dict[str, str] | None:
        logger.warning(
            "Refine: the feedback critic failed (%s: %s); retrying without new hints",
            type(exc).__name__,
            exc,
        )
        return self._last_hints(candidate)

    def _hints_from(self, candidate: Any, advice: Any) -> dict[str, str] | None:
        if not isinstance(advice, dict):
            return self._last_hints(candidate)
        return {name: str(advice.get(name, "N/A")) for name, _ in candidate.named_predictors()}

    @staticmethod
    def _last_hints(candidate: Any) -> dict[str, str] | None:
        """The hints this candidate ran with (kept when no new advice came)."""
        hints = {}
        for name, predictor in candidate.named_predictors():
            field = predictor.signature.input_fields.get("hint_")
            if field is not None and "default" in field.extra:
                hints[name] = str(field.extra["default"])
        return hints or None


def describe_modules(program: Any) -> str:
    """Each predictor of ``program``: its name, input and output fields, and instructions."""
    rule = "-" * 80
    parts = [rule]
    for name, predictor in program.named_predictors():
        signature = predictor.signature
        instructions = textwrap.indent(textwrap.dedent(signature.instructions).strip(), "\t\t")
        parts.append(f"Module {name}")
        parts.append("\tInput Fields:\n" + _fields_text(signature.input_fields))
        parts.append("\tOutput Fields:\n" + _fields_text(signature.output_fields))
        parts.append(f"\tOriginal Instructions:\n{instructions}")
        parts.append(rule)
    return "\n".join(parts)


def _fields_text(fields: Any) -> str:
    from dspex.programs._adapters._values import annotation_name

    lines = []
    for i, (name, field) in enumerate(fields.items(), 1):
        desc = field.desc if field.desc and not field.desc.startswith("${") else ""
        line = f"\t\t{i}. `{name}` ({annotation_name(field.annotation)})"
        lines.append(f"{line}: {desc}" if desc else line)
    return "\n".join(lines)


def _dump(value: Any) -> str:
    """Readable JSON of ``value`` for the critic (objects JSON cannot hold become text)."""
    from dspex.programs._adapters._values import to_jsonable

    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, default=str)


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):  # defined in a REPL, a builtin, a C extension...
        return _NO_SOURCE
