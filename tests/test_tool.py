"""``Tool``: description from a callable, argument validation and calling."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
from typing import Any

import pytest
from pydantic import BaseModel

from dspex.errors import UsageError
from dspex.programs._tool import Tool


class Point(BaseModel):
    x: int
    y: int = 0


class Node(BaseModel):
    value: int
    children: list[Node] = []


def search(query: str, k: int = 3) -> list[str]:
    """Search the web.

    Returns one snippet per hit.
    """
    return [f"{query}-{i}" for i in range(k)]


def nearest(origin: Point, points: list[Point]) -> int:
    return min(abs(p.x - origin.x) + abs(p.y - origin.y) for p in points)


def tag(label: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, **extra}


async def fetch(url: str) -> str:
    await asyncio.sleep(0)
    return f"page at {url}"


class Counter:
    """Adds one to a number."""

    def __call__(self, n: int) -> int:
        return n + 1


def test_name_desc_and_args_come_from_the_function() -> None:
    tool = Tool(search)
    assert tool.name == "search"
    assert tool.desc == search.__doc__  # as written, not dedented (DSPy sends it so)
    assert tool.args == {"query": {"type": "string"}, "k": {"type": "integer", "default": 3}}
    assert tool.arg_types == {"query": str, "k": int}
    assert not tool.has_kwargs


def test_pydantic_args_are_inlined_without_refs() -> None:
    tool = Tool(nearest)
    text = json.dumps(tool.args)
    assert "$ref" not in text and "$defs" not in text
    assert tool.args["origin"]["properties"]["x"]["type"] == "integer"
    assert tool.args["points"]["type"] == "array"
    assert tool.args["points"]["items"]["required"] == ["x"]


def test_recursive_model_keeps_its_definitions() -> None:
    def walk(tree: Node) -> int:
        return tree.value

    schema = Tool(walk).args["tree"]
    assert "$defs" in schema and "Node" in schema["$defs"]


def test_callable_object_uses_its_call_method() -> None:
    tool = Tool(Counter())
    assert tool.name == "Counter"
    assert tool.desc == "Adds one to a number."
    assert tool.args == {"n": {"type": "integer"}}
    assert tool(n="4") == 5


def test_explicit_name_desc_args_and_arg_desc_win() -> None:
    tool = Tool(
        search,
        name="web",
        desc="Look things up.",
        arg_desc={"query": "what to look for"},
    )
    assert (tool.name, tool.desc) == ("web", "Look things up.")
    assert tool.args["query"] == {"type": "string", "description": "what to look for"}
    custom = Tool(search, args={"query": {"type": "string"}})
    assert custom.args == {"query": {"type": "string"}}


def test_prompt_listing_is_dspys_text() -> None:
    # DSPy 3.4.1's str(Tool(search)), byte for byte: each newline of the raw docstring
    # becomes two spaces, and the arguments print as a Python dict.
    assert str(Tool(search)) == (
        "search, whose description is <desc>Search the web.        Returns one snippet per "
        "hit.      </desc>. It takes arguments {'query': {'type': 'string'}, "
        "'k': {'type': 'integer', 'default': 3}}."
    )
    assert Tool(search).format() == str(Tool(search))
    assert str(Tool(nearest)).startswith("nearest. It takes arguments {'origin': {")


def test_undocumented_function_has_no_description_like_dspy() -> None:
    tool = Tool(nearest)
    assert tool.desc is None
    assert tool.format_as_litellm_function_call()["function"]["description"] is None
    assert repr(Tool(Counter())) == (
        "Tool(name=Counter, desc=Adds one to a number., args={'n': {'type': 'integer'}})"
    )


def test_function_call_format_leaves_defaulted_arguments_optional() -> None:
    call = Tool(search).format_as_litellm_function_call()
    assert call == {
        "type": "function",
        "function": {
            "name": "search",
            "description": search.__doc__,
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "k": {"type": "integer", "default": 3},
                },
                "required": ["query"],
            },
        },
    }


def test_defaults_are_shown_as_json_values() -> None:
    import decimal
    import enum

    class Colour(enum.Enum):
        RED = "red"

    def paint(colour: Colour = Colour.RED, amount: decimal.Decimal = decimal.Decimal("1.5")) -> str:
        return "ok"

    args = Tool(paint).args
    assert args["colour"]["default"] == "red"
    assert args["amount"]["default"] == 1.5


def test_call_coerces_arguments_to_the_hints() -> None:
    assert Tool(search)(query="paris", k="2") == ["paris-0", "paris-1"]
    assert Tool(nearest)(origin={"x": 1}, points=[{"x": 4, "y": 1}, {"x": 2}]) == 1


def test_unknown_argument_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match=r"no argument 'limit'.*arguments are \['query', 'k'\]"):
        Tool(search)(query="x", limit=2)


def test_missing_required_argument_is_named() -> None:
    with pytest.raises(ValueError, match=r"needs argument\(s\) \['query'\]"):
        Tool(search)(k=1)


def test_invalid_value_names_argument_type_and_schema() -> None:
    with pytest.raises(UsageError, match=r"argument 'k'='many' is not a valid int") as info:
        Tool(search)(query="x", k="many")
    assert '{"type": "integer", "default": 3}' in str(info.value)


def test_kwargs_tool_accepts_extra_arguments() -> None:
    tool = Tool(tag)
    assert tool.has_kwargs
    assert tool.args == {"label": {"type": "string"}, "extra": {}}  # DSPy lists **extra too
    assert tool(label="a", colour="red") == {"label": "a", "colour": "red"}


def test_positional_only_parameters_are_passed_by_position() -> None:
    assert Tool(len)(obj=[1, 2, 3]) == 3


def test_non_callable_is_rejected_with_the_fix() -> None:
    with pytest.raises(UsageError, match=r"func must be callable.*got int"):
        Tool(42)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="arg_desc names \\['nope'\\]"):
        Tool(search, arg_desc={"nope": "x"})
    with pytest.raises(UsageError, match="non-empty string"):
        Tool(search, name="")


def test_async_tool_runs_to_completion_when_called_synchronously() -> None:
    tool = Tool(fetch)
    assert tool(url="a") == "page at a"
    assert asyncio.run(tool.acall(url="b")) == "page at b"
    assert asyncio.run(Tool(search).acall(query="c", k=1)) == ["c-0"]


def test_async_tool_called_synchronously_inside_a_loop_says_use_acall() -> None:
    async def main() -> None:
        Tool(fetch)(url="a")

    with pytest.raises(UsageError, match=r"await tool\.acall"):
        asyncio.run(main())


def test_tools_copy_and_pickle() -> None:
    tool = Tool(search)
    assert tool(query="x", k=1) == ["x-0"]  # builds a validator cache
    for clone in (copy.deepcopy(tool), pickle.loads(pickle.dumps(tool))):
        assert clone.name == "search"
        assert clone(query="y", k="1") == ["y-0"]
