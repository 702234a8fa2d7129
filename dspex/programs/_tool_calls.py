"""``ToolCalls`` and ``ToolCallResults``: DSPy's types for tool calls an LM asks for.

A signature with a ``ToolCalls`` output field lets the LM name tools and
arguments (``{"tool_calls": [{"name": ..., "args": {...}}]}``); the program
then runs them (``call.execute(...)``) and may pass the values back as
``ToolCallResults``. Both are pydantic models, written and parsed as JSON by
every adapter. Provider-shaped calls (``{"id", "function": {"name",
"arguments": "<json>"}}``) are accepted too; their argument text is parsed
with ``json_repair``, which mends the small JSON slips LMs make.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import json_repair
import pydantic

__all__ = ["ToolCall", "ToolCallResult", "ToolCallResults", "ToolCalls"]


class ToolCall(pydantic.BaseModel):
    """One call: the tool's name and its arguments (``id`` when the provider gave one)."""

    id: str | None = None
    name: str
    args: dict[str, Any] = pydantic.Field(
        default_factory=dict, json_schema_extra={"additionalProperties": True}
    )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        # The LM never writes an id: keep it out of the schema it is shown.
        schema: dict[str, Any] = handler.resolve_ref_schema(handler(core_schema))
        schema.get("properties", {}).pop("id", None)
        if isinstance(schema.get("required"), list):
            schema["required"] = [f for f in schema["required"] if f != "id"]
        return schema

    def format(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args}

    def execute(self, functions: Mapping[str, Callable[..., Any]] | Sequence[Any]) -> Any:
        """Run this call with the function of that name from ``functions``.

        ``functions`` maps names to callables, or lists ``Tool`` objects.
        Raises ``ValueError`` when no function has the name; an error the
        function raises comes back as ``RuntimeError`` naming the tool.
        """
        func: Any = None
        if isinstance(functions, Mapping):
            func = functions.get(self.name)
        else:
            for tool in functions:
                if getattr(tool, "name", None) == self.name:
                    func = getattr(tool, "func", tool)
                    break
        if func is None:
            raise ValueError(
                f"Tool function '{self.name}' not found. Please pass the tool functions to the "
                "`execute` method."
            )
        try:
            return func(**(self.args or {}))
        except Exception as exc:
            raise RuntimeError(f"Error executing tool '{self.name}': {exc}") from exc


def _is_call(data: Mapping[str, Any]) -> bool:
    return ("name" in data and ("args" in data or "arguments" in data)) or "function" in data


def _normalize_call(data: Any) -> dict[str, Any]:
    """A DSPy-shaped or provider-shaped call dict as ``{"id", "name", "args"}``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"Received invalid tool call value for `ToolCalls`: {data!r}")
    if "function" in data:
        function = data.get("function") or {}
        if not isinstance(function, Mapping):
            raise ValueError(f"Received invalid function value for `ToolCalls`: {function!r}")
        arguments = function.get("arguments", {})
        name = function.get("name") or data.get("name")
    else:
        arguments = data.get("args", data.get("arguments", {}))
        name = data.get("name")
    if isinstance(arguments, str):
        arguments = json_repair.loads(arguments)
    if not isinstance(arguments, dict):
        arguments = {}
    return {"id": data.get("id") or data.get("call_id"), "name": name, "args": arguments}


class ToolCalls(pydantic.BaseModel):
    """The tool calls an LM asks for, in order (``ToolCalls.ToolCall`` is one call)."""

    tool_calls: list[ToolCall]
    tool_call_results: Any | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler.resolve_ref_schema(handler(core_schema))
        schema.get("properties", {}).pop("tool_call_results", None)
        if isinstance(schema.get("required"), list):
            schema["required"] = [f for f in schema["required"] if f != "tool_call_results"]
        return schema

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: Sequence[Mapping[str, Any]]) -> ToolCalls:
        """ToolCalls from ``[{"name": ..., "args": {...}}, ...]`` (provider shapes too)."""
        return cls(tool_calls=[ToolCall(**_normalize_call(item)) for item in tool_calls_dicts])

    @classmethod
    def description(cls) -> str:
        """How the type is described in prompts."""
        return (
            "Tool calls must be a JSON object with `tool_calls`, a list of calls. "
            "Each call must include `name` and `args`. "
            'Example: {"tool_calls": [{"name": "search", "args": {"query": "cats"}}]}'
        )

    def format(self) -> dict[str, Any]:
        return {"tool_calls": [call.format() for call in self.tool_calls]}

    @pydantic.model_serializer(mode="plain")
    def _serialize(self) -> dict[str, Any]:
        data = self.format()
        if self.tool_call_results is not None:
            data["tool_call_results"] = pydantic.TypeAdapter(
                type(self.tool_call_results)
            ).dump_python(self.tool_call_results, mode="json")
        return data

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(isinstance(i, Mapping) and _is_call(i) for i in data):
            return {"tool_calls": [_normalize_call(item) for item in data]}
        if isinstance(data, Mapping):
            if isinstance(data.get("tool_calls"), list):
                normalized: dict[str, Any] = {
                    "tool_calls": [
                        _normalize_call(item) if isinstance(item, Mapping) else item
                        for item in data["tool_calls"]
                    ]
                }
                if "tool_call_results" in data:
                    normalized["tool_call_results"] = data["tool_call_results"]
                return normalized
            if _is_call(data):
                return {"tool_calls": [_normalize_call(data)]}
        raise ValueError(
            f"Received invalid value for `ToolCalls`: {data!r}; expected "
            '{"tool_calls": [{"name": ..., "args": {...}}]}'
        )


class ToolCallResult(pydantic.BaseModel):
    """What one tool call returned (``is_error`` when it raised)."""

    call_id: str | None = None
    name: str
    value: Any
    is_error: bool = False


class ToolCallResults(pydantic.BaseModel):
    """The results of tool calls, to show the LM on its next turn."""

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: Sequence[ToolCall] | ToolCalls,
        values: Sequence[Any],
        is_errors: Sequence[bool] | None = None,
    ) -> ToolCallResults:
        """Pair each call with its value (and error flag), in order."""
        calls = tool_calls.tool_calls if isinstance(tool_calls, ToolCalls) else list(tool_calls)
        if len(calls) != len(values):
            raise ValueError("`tool_calls` and `values` must have the same length.")
        errors = [False] * len(calls) if is_errors is None else list(is_errors)
        if len(errors) != len(calls):
            raise ValueError("`is_errors` must have the same length as `tool_calls` when provided.")
        return cls(
            tool_call_results=[
                ToolCallResult(call_id=call.id, name=call.name, value=value, is_error=error)
                for call, value, error in zip(calls, values, errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_shapes(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, Mapping):
            if "tool_call_results" in data:
                return data
            if {"name", "value"} <= set(data):
                return {"tool_call_results": [data]}
        raise ValueError(f"Received invalid value for `ToolCallResults`: {data!r}")


# DSPy's nested names: ToolCalls.ToolCall, ToolCallResults.ToolCallResult
ToolCalls.ToolCall = ToolCall  # type: ignore[attr-defined]
ToolCallResults.ToolCallResult = ToolCallResult  # type: ignore[attr-defined]
