"""``MultiChainComparison``: compare M reasoning attempts and write one corrected answer.

Feed it the completions of an earlier sampling step (for example
``ChainOfThought(sig, n=3)``); each completion's reasoning and final answer
become one ``reasoning_attempt_i`` input, and the predictor writes a
``rationale`` that weighs them before the signature's own outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dspex.errors import UsageError
from dspex.programs._fields import InputField, OutputField
from dspex.programs._module import Module
from dspex.programs._predict import Predict
from dspex.programs._prediction import Prediction
from dspex.programs._signature import Signature, ensure_signature

__all__ = ["MultiChainComparison"]


class MultiChainComparison(Module):
    """Reads ``M`` attempts (``completions``) and produces a corrected, final prediction.

    ``forward(completions, **inputs)``: ``completions`` is a Completions, a
    Prediction's ``.completions`` or a list of dicts, each with a
    ``rationale`` or ``reasoning`` and the signature's last output field.
    The predictor is held as ``self.predict`` (path ``"predict"``).
    """

    predict: Predict

    def __init__(
        self,
        signature: str | type[Signature],
        M: int = 3,  # noqa: N803 - DSPy's keyword
        temperature: float = 0.7,
        **config: Any,
    ) -> None:
        super().__init__()
        if isinstance(M, bool) or not isinstance(M, int) or M < 1:
            raise UsageError(
                f"MultiChainComparison(M={M!r}): the number of attempts must be an int >= 1"
            )
        self.M = M
        extended = ensure_signature(signature)
        outputs = list(extended.output_fields)
        if not outputs:
            raise UsageError("MultiChainComparison needs a signature with an output field")
        self.last_key = outputs[-1]
        for i in range(1, M + 1):
            extended = extended.append(
                f"reasoning_attempt_{i}",
                InputField(prefix=f"Student Attempt #{i}:", desc="${reasoning attempt}"),
            )
        extended = extended.prepend(
            "rationale",
            OutputField(prefix="Accurate Reasoning:", desc="${corrected reasoning}"),
        )
        self.predict = Predict(extended, temperature=temperature, **config)

    def forward(self, completions: Iterable[Any], **kwargs: Any) -> Prediction:
        result: Prediction = self.predict(**self._inputs(completions, kwargs))
        return result

    async def aforward(self, completions: Iterable[Any], **kwargs: Any) -> Prediction:
        result: Prediction = await self.predict.acall(**self._inputs(completions, kwargs))
        return result

    def _inputs(self, completions: Iterable[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The comparison's inputs: ``kwargs`` plus one line per attempt."""
        attempts = [self._attempt(i, c) for i, c in enumerate(completions)]
        if len(attempts) != self.M:
            raise UsageError(
                f"MultiChainComparison got {len(attempts)} completions but was built for "
                f"M={self.M}; sample exactly M (e.g. n={len(attempts)} -> M={len(attempts)})"
            )
        for i, attempt in enumerate(attempts, 1):
            kwargs.setdefault(f"reasoning_attempt_{i}", attempt)
        return kwargs

    def _attempt(self, index: int, completion: Any) -> str:
        """One attempt as a single line: its first reasoning line and its first answer line."""
        get = getattr(completion, "get", None)
        if get is None:
            raise UsageError(
                f"MultiChainComparison: completion {index} is a {type(completion).__name__}; "
                "pass Predictions or dicts"
            )
        reasoning = get("rationale", get("reasoning"))
        if reasoning is None or self.last_key not in completion:
            raise UsageError(
                f"MultiChainComparison: completion {index} needs a 'reasoning' (or 'rationale') "
                f"and a {self.last_key!r} field; sample with dspex.ChainOfThought(...) so "
                "each completion carries its reasoning"
            )
        thought = _first_line(reasoning)
        answer = _first_line(completion[self.last_key])
        return f"«Reasoning: {thought} Answer: {answer}»"


def _first_line(value: Any) -> str:
    return str(value).strip().split("\n")[0].strip()
