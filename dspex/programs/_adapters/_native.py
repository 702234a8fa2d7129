"""Native function calling: tools sent as the provider's ``tools``, calls read back.

DSPy 3.4.1's rule, followed here: with ``use_native_function_calling`` on, a
signature with a ``ToolCalls`` output and a ``list[Tool]`` (or ``Tool``) input
sends the tools as the request's ``tools`` parameter when the LM says it
``supports_function_calling``; both fields then leave the prompt, and the
completion's native ``tool_calls`` fill the ``ToolCalls`` output. With it off,
``tools``/``tool_choice``/``parallel_tool_calls`` are dropped from the call's
parameters, so the tools are only ever described in the prompt text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args, get_origin

from dspex._record import Record
from dspex.errors import AdapterParseError, UsageError

__all__ = [
    "NativePlan",
    "as_completion",
    "complete_native",
    "parse_native",
    "plan_native_tools",
    "recovered_plan",
    "tool_calls_output",
]

_TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")


class NativePlan(Record):
    """What one adapter call sends and expects after planning native features."""

    signature: Any  # the signature the prompt is written and parsed for
    lm_kwargs: dict[str, Any]  # the caller's parameters, with tools added or removed
    tool_calls_field: str | None  # the output filled from native tool calls, if any
    native_fields: tuple[str, ...] = ()  # outputs a native LM feature fills (reasoning)


def tool_calls_output(signature: Any) -> str | None:
    """The name of ``signature``'s ``ToolCalls`` output field, if it has one."""
    from dspex.programs._types._tool_calls import ToolCalls

    for name, field in signature.output_fields.items():
        if field.annotation is ToolCalls:
            return str(name)
    return None


def _tools_input(signature: Any) -> str | None:
    from dspex.programs._tool import Tool

    for name, field in signature.input_fields.items():
        annotation = field.annotation
        if annotation is Tool:
            return str(name)
        if get_origin(annotation) is list and get_args(annotation)[:1] == (Tool,):
            return str(name)
    return None


def plan_native_tools(
    adapter: Any, lm: Any, lm_kwargs: Mapping[str, Any], signature: Any, inputs: Mapping[str, Any]
) -> NativePlan:
    """The signature and parameters for a call, by DSPy's native-tools rule."""
    params = dict(lm_kwargs)
    original = signature
    calls_field = None
    if not getattr(adapter, "use_native_function_calling", False):
        if not params.keys().isdisjoint(_TOOL_PARAMS):
            for key in _TOOL_PARAMS:
                params.pop(key, None)
    else:
        signature, calls_field = _plan_tools(adapter, lm, params, signature, inputs)
    # Output types with a native LM feature (Reasoning: the model's own reasoning)
    # may take their field out of the prompt and set the request's parameters.
    native_types: tuple[type, ...] | None = None
    for name, field in list(signature.output_fields.items()):
        annotation = field.annotation
        adapt = getattr(annotation, "adapt_to_native_lm_feature", None)
        if adapt is None or not isinstance(annotation, type):
            continue
        if native_types is None:  # only now: the defaults are pydantic models (slow to import)
            native_types = (
                getattr(adapter, "native_response_types", None) or _default_native_types()
            )
        if annotation in native_types:
            signature = adapt(signature, name, lm, params)
    if signature is original:  # the common case: no field was taken out
        return NativePlan(signature, params, calls_field, ())
    native = tuple(
        name
        for name in original.output_fields
        if name not in signature.output_fields and name != calls_field
    )
    return NativePlan(signature, params, calls_field, native)


def _default_native_types() -> tuple[type, ...]:
    from dspex.programs._citations import Citations
    from dspex.programs._types._text import Reasoning

    return (Citations, Reasoning)


def _plan_tools(
    adapter: Any, lm: Any, params: dict[str, Any], signature: Any, inputs: Mapping[str, Any]
) -> tuple[Any, str | None]:
    tools_field, calls_field = _tools_input(signature), tool_calls_output(signature)
    if calls_field is None or not getattr(lm, "supports_function_calling", False):
        return signature, None
    if tools_field is None:
        raise UsageError(
            f"{type(adapter).__name__}: the output field `{calls_field}` receives native tool "
            "calls, but the signature has no tools input; add an input field of type "
            "`list[Tool]` and pass the tools in it"
        )
    tools = inputs.get(tools_field) or []
    tools = tools if isinstance(tools, list | tuple) else [tools]
    params["tools"] = [tool.format_as_litellm_function_call() for tool in tools]
    parallel = getattr(adapter, "parallel_tool_calls", None)
    if parallel is not None and params.get("parallel_tool_calls") is None:
        params["parallel_tool_calls"] = parallel
    if params.get("parallel_tool_calls") is not None and params.get("tool_choice") is None:
        # OpenAI's default when tools are given, made explicit as DSPy's request does
        params["tool_choice"] = "auto"
    return signature.delete(calls_field).delete(tools_field), calls_field


def parse_native(
    adapter: Any, plan: NativePlan, original: Any, completion: Any
) -> dict[str, Any] | None:
    """The output values of a completion carrying native tool calls; None when it has
    none (the caller then parses its text as usual).

    Text beside the calls is parsed for the other outputs when there are any
    (a reply that does not parse leaves them unset), and the calls fill the
    ``ToolCalls`` field.
    """
    calls = getattr(completion, "tool_calls", ())
    if not calls or plan.tool_calls_field is None:
        return None
    from dspex.programs._types._tool_calls import ToolCalls

    text = completion.text
    values: dict[str, Any] = {}
    if text and text.strip() and plan.signature.output_fields:
        try:
            values = adapter.parse(plan.signature, text)
        except AdapterParseError:
            values = {}
    values[plan.tool_calls_field] = ToolCalls.from_dict_list([dict(c) for c in calls])
    return values


def recovered_plan(processed: Any, original: Any) -> NativePlan:
    """The plan of a call, from the signature its prompt was written for and the caller's:
    an output ``processed`` lacks was taken out for a native feature (DSPy's
    ``_call_postprocess`` receives only these two)."""
    # Native tool calls in a reply fill the ToolCalls output even when the field was
    # also asked for in the prompt (DSPy: the provider's calls are authoritative).
    calls_field = tool_calls_output(original)
    native = tuple(
        name
        for name in original.output_fields
        if name not in processed.output_fields and name != calls_field
    )
    return NativePlan(processed, {}, calls_field, native)


def as_completion(output: Any) -> Any:
    """A completion from what an adapter may be given: a completion (anything with a
    ``text``) as is, or DSPy's shapes: a string, None, or a dict with ``text``,
    ``tool_calls``, ``reasoning_content``, ``citations`` and ``finish_reason``."""
    if hasattr(output, "text") and not isinstance(output, (str, Mapping)):
        return output  # a completion: the common case, nothing to convert
    from dspex.actors._lm._types import Completion  # only for DSPy's output shapes

    if isinstance(output, str) or output is None:
        return Completion(output or "")
    if isinstance(output, Mapping):
        return Completion(
            output.get("text") or "",
            output.get("finish_reason"),
            tuple(output.get("tool_calls") or ()),
            output.get("reasoning_content"),
            tuple(output.get("citations") or ()),
        )
    raise UsageError(
        f"an LM output must be a completion, a string or a dict with 'text', got "
        f"{type(output).__name__} ({output!r:.80})"
    )


def complete_native(
    adapter: Any, plan: NativePlan, original: Any, completion: Any, values: dict[str, Any]
) -> dict[str, Any]:
    """``values`` with every output of ``original``: the native features' values (the
    model's reasoning), then defaults, then None for what the reply does not give."""
    for name in plan.native_fields:
        parse = getattr(original.output_fields[name].annotation, "parse_lm_response", None)
        parsed = parse(completion) if parse is not None else None
        if parsed is not None:
            values[name] = parsed
    for field in adapter.plan(original).outputs:  # defaults first, as DSPy fills them
        if field.name not in values:
            values[field.name] = field.fallback() if field.fallback is not None else None
    return values
