"""``ToolCalls`` (an output listing tool calls) and ``ToolCallResults`` (their results)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pydantic

from dspex.programs._adapters._decode import decode_data
from dspex.programs._types._base import Type

__all__ = ["ToolCallResults", "ToolCalls"]

_REQUIREMENT = ' (must be a JSON object like {"tool_calls": [{"name": "...", "args": {...}}]})'


def _is_call(data: dict[str, Any]) -> bool:
    return ("name" in data and ("args" in data or "arguments" in data)) or "function" in data


def _normalized_call(data: Any) -> dict[str, Any]:
    """A call given DSPy's way (``name``/``args``) or the provider's (``function``)."""
    if not isinstance(data, dict):
        raise ValueError(f"a tool call must be a dict with `name` and `args`, got {data!r}")
    if "function" in data:
        function = data.get("function") or {}
        if not isinstance(function, dict):
            raise ValueError(
                f"invalid function value in a tool call: {function!r} (expected a dict)"
            )
        arguments = function.get("arguments", {})
        name = function.get("name") or data.get("name")
    else:
        arguments = data.get("args", data.get("arguments", {}))
        name = data.get("name")
    if isinstance(arguments, str):
        arguments = _json_arguments(arguments)
    elif not isinstance(arguments, dict):
        arguments = {}
    return {"id": data.get("id") or data.get("call_id"), "name": name, "args": arguments}


def _json_arguments(text: str) -> dict[str, Any]:
    try:
        decoded = decode_data(text)
    except ValueError:
        # Providers sometimes send cut-off or sloppy argument JSON; DSPy repairs it.
        import json_repair

        try:
            decoded = json_repair.loads(text)
        except (ValueError, RecursionError):
            return {}
    return decoded if isinstance(decoded, dict) else {}


# No class docstrings on ToolCalls/ToolCall: pydantic would put them in the JSON schema
# shown to the LM, which must stay DSPy's.
class ToolCalls(Type):
    # The tool calls an LM asked for: ``tool_calls`` is a list of ``ToolCall(name, args)``.

    __dspex_tool_calls__: ClassVar[bool] = True
    __dspex_requirement__: ClassVar[str] = _REQUIREMENT

    class ToolCall(Type):
        # One call: the tool's ``name``, its ``args``, and the provider's ``id`` if any.

        id: str | None = None
        name: str
        args: dict[str, Any] = pydantic.Field(json_schema_extra={"additionalProperties": True})

        @classmethod
        def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
            # The LM never writes ids: keep `id` out of the schema it is shown.
            schema = handler.resolve_ref_schema(
                super().__get_pydantic_json_schema__(core_schema, handler)
            )
            schema.get("properties", {}).pop("id", None)
            if isinstance(schema.get("required"), list):
                schema["required"] = [f for f in schema["required"] if f != "id"]
            return schema

        def format(self) -> dict[str, Any]:
            return {"name": self.name, "args": self.args}

        def execute(self, functions: Any = None) -> Any:
            """Call the named tool with ``args``.

            ``functions`` is ``{name: callable}`` or a list of ``Tool``; None
            looks the name up in the caller's locals, then globals.
            """
            import inspect

            func = None
            if functions is None:
                frame = inspect.currentframe()
                caller = frame.f_back if frame is not None else None
                try:
                    if caller is not None:
                        func = caller.f_locals.get(self.name) or caller.f_globals.get(self.name)
                finally:
                    del frame, caller
            elif isinstance(functions, dict):
                func = functions.get(self.name)
            else:
                for tool in functions:
                    if getattr(tool, "name", None) == self.name:
                        func = getattr(tool, "func", tool)
                        break
            if func is None:
                raise ValueError(
                    f"tool {self.name!r} not found; pass it: call.execute(functions=[tool, ...]) "
                    f"or call.execute(functions={{{self.name!r}: fn}})"
                )
            try:
                return func(**(self.args or {}))
            except Exception as exc:
                raise RuntimeError(f"Error executing tool '{self.name}': {exc}") from exc

    tool_calls: list[ToolCall]
    tool_call_results: Any | None = None

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        schema = handler.resolve_ref_schema(
            super().__get_pydantic_json_schema__(core_schema, handler)
        )
        schema.get("properties", {}).pop("tool_call_results", None)
        if isinstance(schema.get("required"), list):
            schema["required"] = [f for f in schema["required"] if f != "tool_call_results"]
        return schema

    @classmethod
    def from_dict_list(cls, tool_calls_dicts: list[dict[str, Any]]) -> ToolCalls:
        """``ToolCalls`` from ``[{"name": ..., "args": {...}}, ...]`` (provider shapes too)."""
        return cls(tool_calls=[cls.ToolCall(**_normalized_call(d)) for d in tool_calls_dicts])

    @classmethod
    def description(cls) -> str:
        return (
            "Tool calls must be a JSON object with `tool_calls`, a list of calls. "
            "Each call must include `name` and `args`. "
            'Example: {"tool_calls": [{"name": "search", "args": {"query": "cats"}}]}'
        )

    def format(self) -> dict[str, Any]:
        return {"tool_calls": [call.format() for call in self.tool_calls]}

    @pydantic.model_serializer()
    def serialize_model(self) -> Any:
        data = self.format()
        if self.tool_call_results is not None:
            data["tool_call_results"] = pydantic.TypeAdapter(
                type(self.tool_call_results)
            ).dump_python(self.tool_call_results, mode="json")
        return data

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_data(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(isinstance(d, dict) and _is_call(d) for d in data):
            return {"tool_calls": [cls.ToolCall(**_normalized_call(d)) for d in data]}
        if isinstance(data, dict):
            calls = data.get("tool_calls")
            if isinstance(calls, list):
                normalized: dict[str, Any] = {
                    "tool_calls": [
                        cls.ToolCall(**_normalized_call(d)) if isinstance(d, dict) else d
                        for d in calls
                    ]
                }
                if "tool_call_results" in data:
                    normalized["tool_call_results"] = data["tool_call_results"]
                return normalized
            if "tool_calls" not in data and _is_call(data):
                return {"tool_calls": [cls.ToolCall(**_normalized_call(data))]}
        raise ValueError(
            f"not tool calls: {json.dumps(data, default=str)[:200]}; expected "
            '{"tool_calls": [{"name": "...", "args": {...}}]}'
        )


class ToolCallResults(pydantic.BaseModel):
    """The results of running some tool calls, one per call."""

    class ToolCallResult(pydantic.BaseModel):
        call_id: str | None = None
        name: str
        value: Any
        is_error: bool = False

    tool_call_results: list[ToolCallResult]

    @classmethod
    def from_tool_calls_and_values(
        cls,
        tool_calls: list[ToolCalls.ToolCall] | ToolCalls,
        values: list[Any],
        is_errors: list[bool] | None = None,
    ) -> ToolCallResults:
        """Pair each call with its value (and whether it is an error)."""
        calls = tool_calls.tool_calls if isinstance(tool_calls, ToolCalls) else tool_calls
        if len(calls) != len(values):
            raise ValueError(
                f"{len(calls)} tool calls but {len(values)} values: pass one value per call"
            )
        errors = is_errors if is_errors is not None else [False] * len(calls)
        if len(errors) != len(calls):
            raise ValueError(f"{len(calls)} tool calls but {len(errors)} is_errors flags")
        return cls(
            tool_call_results=[
                cls.ToolCallResult(call_id=c.id, name=c.name, value=v, is_error=e)
                for c, v, e in zip(calls, values, errors, strict=True)
            ]
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_data(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list):
            return {"tool_call_results": data}
        if isinstance(data, dict):
            if "tool_call_results" in data:
                return data
            if {"name", "value"} <= set(data):
                return {"tool_call_results": [data]}
        raise ValueError(f"not tool call results: {data!r}")
