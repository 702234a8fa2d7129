"""``Type``: the base of DSPy's custom field types (a pydantic model with ``format()``)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pydantic

from dspex.programs._types._markers import (
    CUSTOM_TYPE_END_IDENTIFIER,
    CUSTOM_TYPE_START_IDENTIFIER,
    custom_types_in,
)

__all__ = ["Type"]


class Type(pydantic.BaseModel):
    """A custom signature field type: subclass it and define ``format()``.

    ``format()`` returns either text or a list of OpenAI content parts
    (``[{"type": "image_url", ...}]``); parts are carried through the prompt
    text between markers and become real content parts of the user message.
    ``description()`` is added under the field in the system message.
    """

    __dspex_custom_type__: ClassVar[bool] = True

    def format(self) -> list[dict[str, Any]] | str | dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must define format()")

    @classmethod
    def description(cls) -> str:
        """Text explaining the type to the LM (shown under each field of this type)."""
        return ""

    @classmethod
    def extract_custom_type_from_annotation(cls, annotation: Any) -> list[type]:
        """The subclasses of ``cls`` named anywhere in ``annotation``."""
        return [t for t in custom_types_in(annotation) if issubclass(t, cls)]

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        formatted = self.format()
        if isinstance(formatted, list):
            body = json.dumps(formatted, ensure_ascii=False)
            return f"{CUSTOM_TYPE_START_IDENTIFIER}{body}{CUSTOM_TYPE_END_IDENTIFIER}"
        return formatted

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> Any:
        """DSPy's hook for native LM features; dspex sends every type as text or parts."""
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        return False

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Any:
        return None

    @classmethod
    def parse_lm_response(cls, response: Any) -> Any:
        return None
