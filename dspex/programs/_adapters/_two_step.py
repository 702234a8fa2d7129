"""TwoStepAdapter: the main LM answers in prose; a second LM extracts the typed outputs.

Reasoning models often write good answers but keep structured formats
poorly. The first request asks the main LM for the outputs in free text (a
plain task description, ``name: value`` lines); each completion is then
handed to ``extraction_model`` through a ChatAdapter call of a derived
signature ``text -> <the original outputs>``, whose parsed values are the
result. As in DSPy the extraction step has no demos, so optimizers cannot
tune it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import AdapterParseError, UsageError
from dspex.programs._adapters._base import Adapter, FieldPlan, _describe_fields, _resolve
from dspex.programs._adapters._chat import ChatAdapter
from dspex.programs._fields import InputField
from dspex.programs._signature import make_signature

__all__ = ["TwoStepAdapter"]

# DSPy's text, including the 13 spaces its source's line continuation leaves in it.
_EXTRACTION_INSTRUCTIONS = (
    "The input is a text that should contain all the necessary information to produce the "
    "fields {fields}." + " " * 13 + "Your job is to extract the fields from the text verbatim. "
    "Extract precisely the appropriate value (content) for each field."
)


class TwoStepAdapter(Adapter):
    """Free-form first pass with the configured LM, structured extraction with ``extraction_model``.

    ``extraction_model`` is any LM (``dspex.LM``, ``DummyLM``, a custom LM
    object with ``generate``), typically a small fast one.
    """

    def __init__(self, extraction_model: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(getattr(extraction_model, "generate", None)):
            raise UsageError(
                f"TwoStepAdapter(extraction_model={extraction_model!r}): pass an LM, e.g. "
                "TwoStepAdapter(dspex.LM('openai/gpt-4o-mini'))"
            )
        self.extraction_model = extraction_model
        self._extractors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"TwoStepAdapter(extraction_model={self.extraction_model!r})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_extractors"] = None  # a cache of weak references: rebuilt after unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._extractors = weakref.WeakKeyDictionary()

    # --- the first request ----------------------------------------------------

    def format(
        self, signature: Any, demos: Sequence[Any], inputs: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """A task description, the demos, then the inputs as ``name: value`` lines."""
        signature = _resolve(signature)
        return [
            {"role": "system", "content": self.format_task_description(signature)},
            *self.format_demos(signature, demos),
            {"role": "user", "content": self.format_user_message_content(signature, inputs)},
        ]

    def format_system_message(self, signature: Any) -> str:
        return self.format_task_description(signature)

    def format_task_description(self, signature: Any) -> str:
        """What the task takes and must produce, in plain words (DSPy's wording)."""
        parts = [
            "You are a helpful assistant that can solve tasks based on user input.",
            "As input, you will be provided with:\n" + _describe_fields(signature.input_fields),
            "Your outputs must contain:\n" + _describe_fields(signature.output_fields),
            "You should lay out your outputs in detail so that your answer can be understood "
            "by another agent",
        ]
        if signature.instructions:
            parts.append(f"Specific instructions: {signature.instructions}")
        return "\n".join(parts)

    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        parts = [prefix]
        for name in signature.input_fields:
            if name in inputs:
                parts.append(f"{name}: {inputs[name]}")
        parts.append(suffix)
        return "\n\n".join(parts).strip()

    def format_field_block(self, field: FieldPlan, value: Any) -> str:
        return f"{field.name}: {value}"

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        parts = [
            f"{name}: {outputs.get(name, missing_field_message)}"
            for name in signature.output_fields
            if name in outputs
        ]
        return "\n\n".join(parts).strip()

    # --- the extraction -------------------------------------------------------

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """The output values, extracted from the main LM's text by ``extraction_model``."""
        signature = _resolve(signature)
        try:
            values: list[dict[str, Any]] = ChatAdapter()(
                self.extraction_model,
                lm_kwargs={},
                signature=self.extractor_signature(signature),
                demos=[],
                inputs={"text": completion},
            )
        except AdapterParseError as exc:
            raise AdapterParseError(
                "TwoStepAdapter: Failed to parse response from the original completion (the "
                f"extraction model's reply did not fit {list(signature.output_fields)}): {exc}",
                raw=completion,
                adapter="TwoStepAdapter",
                field=exc.field,
            ) from exc
        return values[0]

    def extractor_signature(self, signature: Any) -> Any:
        """``text -> <signature's outputs>``, with DSPy's extraction instructions (cached)."""
        try:
            return self._extractors[signature]
        except (KeyError, TypeError):
            pass
        fields: dict[str, Any] = {"text": (str, InputField())}
        for name, info in signature.output_fields.items():
            fields[name] = (info.annotation, info)
        listed = ", ".join(f"`{name}`" for name in signature.output_fields)
        extractor = make_signature(fields, _EXTRACTION_INSTRUCTIONS.format(fields=listed))
        with contextlib.suppress(TypeError):  # not weak-referenceable: rebuilt per call
            self._extractors[signature] = extractor
        return extractor
