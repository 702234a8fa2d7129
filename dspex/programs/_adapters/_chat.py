"""ChatAdapter: DSPy's default ``[[ ## field ## ]]`` marker format, with JSON fallback.

JSONAdapter is defined here too, from its format (``_json.JSONFormat``) and
ChatAdapter: it is a ChatAdapter (as in DSPy), and ChatAdapter falls back to
it, so the two classes live in one module rather than import each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dspex.errors import AdapterParseError
from dspex.programs._adapters._base import (
    STRUCTURE_INTRO,
    Adapter,
    FieldPlan,
    field_placeholders,
    type_info,
)
from dspex.programs._adapters._json import JSONFormat
from dspex.programs._adapters._values import format_input_value

__all__ = ["ChatAdapter", "JSONAdapter"]

# A marker opens a line (after optional spaces); text after it on the line belongs to it.
_HEADER = re.compile(r"^[^\S\n]*\[\[ ## (\w+) ## \]\]", re.MULTILINE)
COMPLETED = "[[ ## completed ## ]]"


class ChatAdapter(Adapter):
    """Fields as ``[[ ## name ## ]]`` sections; the reply ends with ``[[ ## completed ## ]]``.

    If a reply cannot be parsed (``AdapterParseError``), the call is retried
    once through :class:`JSONAdapter`, as DSPy does: small models that cannot
    keep the marker format often can answer under a JSON schema. LM errors are
    never retried here. Pass ``use_json_adapter_fallback=False`` to turn the
    fallback off.
    """

    def __init__(
        self,
        callbacks: Sequence[Any] | None = None,
        use_native_function_calling: bool = False,
        native_response_types: Sequence[Any] | None = None,
        use_json_adapter_fallback: bool = True,
        parallel_tool_calls: bool | None = None,
    ) -> None:
        super().__init__(callbacks, use_native_function_calling)
        self.native_response_types = native_response_types
        self.use_json_adapter_fallback = use_json_adapter_fallback
        # DSPy's request for provider-side parallel tool calls; kept for native
        # function calling, which dspex's adapters do not do yet.
        self.parallel_tool_calls = parallel_tool_calls

    def __call__(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as first:
            if isinstance(self, JSONAdapter) or not self.use_json_adapter_fallback:
                raise
            try:
                values: list[dict[str, Any]] = _json_fallback()(
                    lm, lm_kwargs, signature, demos, inputs
                )
            except AdapterParseError as second:
                if _specificity(first) > _specificity(second):
                    raise _leading_with(first, second) from first
                raise second from first
            return values

    async def _acall(
        self,
        lm: Any,
        lm_kwargs: Mapping[str, Any],
        signature: Any,
        demos: Sequence[Any],
        inputs: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """``__call__`` awaited: the same JSON fallback on a parse error."""
        try:
            return await super()._acall(lm, lm_kwargs, signature, demos, inputs)
        except AdapterParseError as first:
            if isinstance(self, JSONAdapter) or not self.use_json_adapter_fallback:
                raise
            try:
                values: list[dict[str, Any]] = await _json_fallback()._acall(
                    lm, lm_kwargs, signature, demos, inputs
                )
            except AdapterParseError as second:
                if _specificity(first) > _specificity(second):
                    raise _leading_with(first, second) from first
                raise second from first
            return values

    _native_call = __call__

    def format_field_structure(self, signature: Any) -> str:
        parts = [
            STRUCTURE_INTRO,
            field_placeholders(signature.input_fields, is_input=True),
            field_placeholders(signature.output_fields, is_input=False),
            COMPLETED + "\n",
        ]
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        fields = ", then ".join(
            f"`[[ ## {name} ## ]]`{type_info(info.annotation)}"
            for name, info in signature.output_fields.items()
        )
        return (
            f"Respond with the corresponding output fields, starting with the field {fields}, "
            f"and then ending with the marker for `{COMPLETED}`."
        )

    def format_field_block(self, field: FieldPlan, value: Any) -> str:
        return f"[[ ## {field.name} ## ]]\n{format_input_value(field.annotation, value)}"

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        block = self.format_field_block
        body = "\n\n".join(
            block(f, outputs.get(f.name, missing_field_message))
            for f in self.plan(signature).outputs
        )
        return body.strip() + f"\n\n{COMPLETED}\n"

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """Split the reply at its markers and convert each output field's text."""
        plan = self.plan(signature)
        text = completion
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        sections: dict[str, str] = {}
        matches = list(_HEADER.finditer(text))
        for index, match in enumerate(matches):
            name = match.group(1)
            if name in plan.output_names and name not in sections:  # first one wins
                end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
                sections[name] = text[match.end() : end].strip()
        return self.complete_outputs(
            plan,
            sections,
            completion,
            "Each output field must start on its own line with its marker, "
            "e.g. `[[ ## name ## ]]`.",
        )


def _specificity(error: AdapterParseError) -> int:
    """How precisely ``error`` names what is wrong: 1 when a field was found with a
    value of the wrong type (its cause is the conversion's error), else 0."""
    return 1 if isinstance(error.__cause__, ValueError | TypeError) else 0


def _leading_with(first: AdapterParseError, second: AdapterParseError) -> AdapterParseError:
    """ChatAdapter's precise error, with the fallback's failure after it.

    A value of the wrong type says more than the fallback's reply lacking the
    field (the LM answered differently the second time), so it leads.
    """
    return AdapterParseError(
        f"{first} The JSONAdapter fallback failed too: {second}",
        raw=first.raw,
        adapter=first.adapter,
        field=first.field,
    )


class JSONAdapter(JSONFormat, ChatAdapter):
    """Asks for a JSON object with the output fields and parses it tolerantly.

    Requests structured output as DSPy 3.4.1 does, by what the LM says it
    takes (``lm.supported_params``, ``lm.supports_response_schema``): OpenAI's
    strict ``json_schema`` ``response_format`` built from the output types
    where the model supports it (and for ``local/`` models), ``{"type":
    "json_object"}`` where it supports only JSON mode or a type has no strict
    schema (an open ``dict``), and none for an LM that does not list
    ``response_format``. A ``response_format`` the caller passes in
    ``lm_kwargs`` wins. If the provider rejects the schema (HTTP 400/422), the
    call is retried once with ``json_object``. Replies may wrap the object in
    a code fence or prose and may use Python literal syntax.
    """


_FALLBACK: list[JSONAdapter] = []


def _json_fallback() -> JSONAdapter:
    """The shared JSONAdapter used for fallback (adapters are stateless)."""
    if not _FALLBACK:
        _FALLBACK.append(JSONAdapter())
    return _FALLBACK[0]
