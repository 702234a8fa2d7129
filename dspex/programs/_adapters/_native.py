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
from typing import Any, NamedTuple, get_args, get_origin

from dspex.errors import AdapterParseError, UsageError

__all__ = ["NativePlan", "parse_native", "plan_native_tools", "tool_calls_output"]

_TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls")


class NativePlan(NamedTuple):
    """What one adapter call sends and expects after planning native features."""

    signature: Any  # the signature the prompt is written and parsed for
    lm_kwargs: dict[str, Any]  # the caller's parameters, with tools added or removed
    tool_calls_field: str | None  # the output filled from native tool calls, if any


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
    if not getattr(adapter, "use_native_function_calling", False):
        for key in _TOOL_PARAMS:
            params.pop(key, None)
        return NativePlan(signature, params, None)
    tools_field, calls_field = _tools_input(signature), tool_calls_output(signature)
    if calls_field is None or not getattr(lm, "supports_function_calling", False):
        return NativePlan(signature, params, None)
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
    signature = signature.delete(calls_field).delete(tools_field)
    return NativePlan(signature, params, calls_field)


def parse_native(
    adapter: Any, plan: NativePlan, original: Any, completion: Any
) -> dict[str, Any] | None:
    """The output values of a completion that carries native tool calls; None otherwise.

    Text beside the calls is parsed for the other outputs when there are any
    (a reply that does not parse leaves them unset); every output the reply
    does not give is None, and the calls fill the ``ToolCalls`` field.
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
    for field in adapter.plan(original).outputs:  # defaults first, as DSPy fills them
        if field.name not in values:
            values[field.name] = field.fallback() if field.fallback is not None else None
    values[plan.tool_calls_field] = ToolCalls.from_dict_list([dict(c) for c in calls])
    return values
