"""``ChainOfThought``: Predict with a ``reasoning`` output written before the answers."""

from __future__ import annotations

from typing import Any

from dspex.programs._fields import FieldInfo, OutputField
from dspex.programs._module import Module
from dspex.programs._predict import Predict
from dspex.programs._prediction import Prediction
from dspex.programs._signature import Signature, ensure_signature

__all__ = ["ChainOfThought"]

REASONING_PREFIX = "Reasoning: Let's think step by step in order to"
REASONING_DESC = "${reasoning}"


class ChainOfThought(Module):
    """Asks the LM to reason step by step before producing the outputs.

    The signature gets a ``reasoning`` output field first among the outputs
    (``rationale_field`` replaces its default definition). The extended call is
    held by the ``predict`` attribute, so its predictor path ends in
    ``"predict"`` as in DSPy.
    """

    predict: Predict

    def __init__(
        self,
        signature: str | type[Signature],
        rationale_field: FieldInfo | None = None,
        rationale_field_type: Any = str,
        **config: Any,
    ) -> None:
        super().__init__()
        base = ensure_signature(signature)
        if rationale_field is not None:
            annotation = getattr(rationale_field, "annotation", None)
            field_type = annotation if annotation is not None else rationale_field_type
            field = rationale_field
        else:
            field_type = rationale_field_type
            field = OutputField(prefix=REASONING_PREFIX, desc=REASONING_DESC)
        extended = base.prepend(name="reasoning", field=field, type_=field_type)
        self.predict = Predict(extended, **config)

    def forward(self, **kwargs: Any) -> Prediction:
        result: Prediction = self.predict(**kwargs)
        return result

    async def aforward(self, **kwargs: Any) -> Prediction:
        result: Prediction = await self.predict.acall(**kwargs)
        return result
