"""The JSON format of JSONAdapter: outputs as one JSON object, enforced with ``response_format``.

:class:`JSONFormat` holds everything JSON-specific; ``_chat`` combines it with
ChatAdapter into ``JSONAdapter``. :func:`find_json_object` reads the object
out of a reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dspex.errors import AdapterParseError, ContextWindowError, LMError
from dspex.programs._adapters._base import (
    STRUCTURE_INTRO,
    Adapter,
    FieldPlan,
    field_placeholder,
    field_placeholders,
    type_info,
)
from dspex.programs._adapters._decode import decode_data, strip_fences
from dspex.programs._adapters._values import to_jsonable
from dspex.programs._callbacks import call_lm

__all__ = ["JSONFormat", "find_json_object"]

# Provider statuses meaning "this request is malformed": here, a schema it rejects.
_SCHEMA_REJECTED = frozenset({400, 422})


def _json_mode() -> dict[str, str]:
    """A fresh ``response_format`` asking for JSON mode. The schema module loads
    with JSONAdapter's first call, not with ChatAdapter, which imports this one."""
    from dspex.programs._adapters._schema import JSON_OBJECT

    return dict(JSON_OBJECT)


class JSONFormat(Adapter):
    """JSONAdapter's wire format: the prompt's structure, LM parameters and parsing."""

    def _default_lm_params(self, signature: Any) -> dict[str, Any]:
        fields = {name: info.annotation for name, info in signature.output_fields.items()}
        if any(getattr(a, "__dspex_tool_calls__", False) for a in fields.values()):
            return {"response_format": _json_mode()}  # DSPy asks no schema for tool calls
        from dspex.programs._adapters._schema import response_format

        return {"response_format": response_format(fields)}

    def _fit_lm_params(self, defaults: Mapping[str, Any], lm: Any) -> Mapping[str, Any]:
        # DSPy's rule: no response_format for an LM that does not list it among its
        # supported_params (DSPy's DummyLM, a self-hosted openai/ model), JSON mode for one
        # without response-schema support. An LM object that says nothing either way (a
        # plain LMProtocol object) gets the schema, as before.
        params = getattr(lm, "supported_params", None)
        if params is not None and "response_format" not in params:
            return {k: v for k, v in defaults.items() if k != "response_format"}
        if getattr(lm, "supports_response_schema", True) is False:
            return {**defaults, "response_format": _json_mode()}
        return defaults

    def _generate(self, lm: Any, messages: list[dict[str, Any]], params: dict[str, Any]) -> Any:
        try:
            return call_lm(lm, messages, params)
        except LMError as exc:
            fmt = params.get("response_format")
            if isinstance(exc, ContextWindowError) or not (  # a shorter format fits no better
                isinstance(fmt, Mapping)
                and fmt.get("type") == "json_schema"
                and exc.status in _SCHEMA_REJECTED
            ):
                raise
        return call_lm(lm, messages, {**params, "response_format": _json_mode()})

    async def _agenerate(
        self, lm: Any, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> Any:
        """``_generate`` awaited: the same retry without a JSON schema when it is refused."""
        if type(self)._generate is not type(self)._native_generate:
            return await super()._agenerate(lm, messages, params)  # a custom _generate
        from dspex.programs._async_lm import acall_lm

        try:
            return await acall_lm(lm, messages, params)
        except LMError as exc:
            fmt = params.get("response_format")
            if isinstance(exc, ContextWindowError) or not (
                isinstance(fmt, Mapping)
                and fmt.get("type") == "json_schema"
                and exc.status in _SCHEMA_REJECTED
            ):
                raise
        return await acall_lm(lm, messages, {**params, "response_format": _json_mode()})

    _native_generate = _generate

    def format_field_structure(self, signature: Any) -> str:
        outputs = {
            name: field_placeholder(name, info.annotation, is_input=False)
            for name, info in signature.output_fields.items()
        }
        parts = [
            STRUCTURE_INTRO,
            "Inputs will have the following structure:",
            field_placeholders(signature.input_fields, is_input=True),
            "Outputs will be a JSON object with the following fields.",
            json.dumps(outputs, indent=2, ensure_ascii=False),
        ]
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        fields = ", then ".join(
            f"`{name}`{type_info(info.annotation)}"
            for name, info in signature.output_fields.items()
        )
        return f"Respond with a JSON object in the following order of fields: {fields}."

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        fields: tuple[FieldPlan, ...] = self.plan(signature).outputs
        values = {f.name: outputs.get(f.name, missing_field_message) for f in fields}
        return json.dumps(to_jsonable(values), indent=2, ensure_ascii=False)

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        """Find the JSON object in the reply and convert each output field."""
        plan = self.plan(signature)
        data = find_json_object(completion)
        if data is None:
            raise AdapterParseError(
                "Adapter JSONAdapter failed to parse the LM response: it holds no JSON object; "
                "expected an object with "
                f"keys [{', '.join(f.name for f in plan.outputs)}]. LM reply (also in .raw): "
                f"{completion[:300]!r}",
                raw=completion,
                adapter="JSONAdapter",
                field=plan.outputs[0].name if plan.outputs else None,
            )
        found = {f.name: data[f.name] for f in plan.outputs if f.name in data}
        return self.complete_outputs(
            plan, found, completion, "Reply with one JSON object holding every output field."
        )


def find_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``, tolerating fences, prose around it and Python syntax.

    Tries the whole text first, then each balanced ``{...}`` span in order.
    Returns None when no object can be read.
    """
    whole = _as_object(text)
    if whole is not None:
        return whole
    start = text.find("{")
    first = start
    while start != -1:
        end = _matching_brace(text, start)
        if end == -1:
            break
        found = _as_object(text[start : end + 1])
        if found is not None:
            return found
        start = text.find("{", start + 1)
    if first == -1:
        return None
    return _repaired(strip_fences(text[first:]))


def _repaired(text: str) -> dict[str, Any] | None:
    """The object ``json_repair`` makes of malformed JSON (a missing brace or quote,
    a trailing comma, an unescaped newline), as DSPy reads LM replies."""
    import json_repair

    try:
        value = json_repair.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and value else None


def _as_object(text: str) -> dict[str, Any] | None:
    body = strip_fences(text)
    if not body.startswith("{"):
        return None
    try:
        value = decode_data(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start``, skipping string contents."""
    depth = 0
    quote = ""
    index = start
    length = len(text)
    while index < length:
        ch = text[index]
        if quote:
            if ch == "\\":
                index += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1
