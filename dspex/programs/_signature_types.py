"""Type expressions in signatures: safe evaluation of type text and rendering back.

``"list[str]"``, ``"Optional[int]"``, ``"Literal['a', 'b']"``, ``"int | None"``
and ``"models.Item"`` are evaluated from their ``ast`` without ``eval``: only
names, dotted names, subscripts, ``|`` and literal constants are allowed, and
names resolve from a fixed table (builtins, ``typing`` names, ``datetime``
classes) or from a caller-supplied lookup (``custom_types``, the caller's
frame). :func:`type_to_text` renders an annotation into text this module
parses back to an equal annotation.
"""

from __future__ import annotations

import ast
import datetime
import enum
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "KNOWN_TYPE_NAMES",
    "TypeExprError",
    "caller_lookup",
    "evaluate_type",
    "is_type_like",
    "type_roots",
    "type_to_text",
]

_NONE_TYPE = type(None)

KNOWN_TYPE_NAMES: Mapping[str, Any] = types.MappingProxyType(
    {
        **{
            t.__name__: t
            for t in (str, int, float, bool, bytes, complex, list, dict, tuple, set, frozenset)
        },
        "object": object,
        "None": None,
        "Any": typing.Any,
        "Dict": typing.Dict,  # noqa: UP006 - users write these names in strings
        "FrozenSet": typing.FrozenSet,  # noqa: UP006
        "List": typing.List,  # noqa: UP006
        "Literal": typing.Literal,
        "Mapping": typing.Mapping,
        "Optional": typing.Optional,
        "Sequence": typing.Sequence,
        "Set": typing.Set,  # noqa: UP006
        "Tuple": typing.Tuple,  # noqa: UP006
        "Union": typing.Union,
        "date": datetime.date,
        "datetime": datetime.datetime,
        "time": datetime.time,
        "timedelta": datetime.timedelta,
    }
)

_LITERAL_CONSTANTS = (str, int, float, bool, bytes, type(None))


class TypeExprError(Exception):
    """A type expression could not be evaluated; ``offset`` is within the type text."""

    def __init__(self, problem: str, fix: str, offset: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.offset = offset


def is_type_like(obj: Any) -> bool:
    """True for objects usable as a field annotation (classes, generics, unions, Any...)."""
    if obj is None or isinstance(obj, type):
        return True
    if isinstance(obj, types.GenericAlias | types.UnionType):
        return True
    return type(obj).__module__ == "typing"


def _offset(node: ast.AST, line_starts: list[int]) -> int:
    lineno = getattr(node, "lineno", 1)
    return line_starts[lineno - 1] + getattr(node, "col_offset", 0)


def type_roots(tree: ast.expr) -> frozenset[str]:
    """Names an expression needs from outside the fixed table (first part of dotted names)."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in KNOWN_TYPE_NAMES:
            roots.add(node.id)
    return frozenset(roots)


def evaluate_type(
    tree: ast.expr,
    text: str,
    lookup: Callable[[str], Any] | None = None,
    *,
    forward_refs: bool = False,
) -> Any:
    """Turn the parsed type expression ``tree`` (of ``text``) into an annotation.

    ``lookup(name)`` resolves names outside the fixed table and raises
    ``KeyError`` when it cannot. With ``forward_refs`` a quoted type
    (``"Address"``, as in class annotations) is parsed and evaluated too.
    Raises :class:`TypeExprError`.
    """
    line_starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            line_starts.append(i + 1)
    return _Evaluator(lookup, line_starts, forward_refs).type_(tree)


class _Evaluator:
    def __init__(
        self, lookup: Callable[[str], Any] | None, line_starts: list[int], forward_refs: bool
    ) -> None:
        self.lookup = lookup
        self.line_starts = line_starts
        self.forward_refs = forward_refs

    def fail(self, node: ast.AST, problem: str, fix: str) -> TypeExprError:
        return TypeExprError(problem, fix, _offset(node, self.line_starts))

    def name(self, node: ast.Name) -> Any:
        if node.id in KNOWN_TYPE_NAMES:
            return KNOWN_TYPE_NAMES[node.id]
        if self.lookup is not None:
            try:
                return self.lookup(node.id)
            except KeyError:
                pass
        raise self.fail(
            node,
            f"unknown type name `{node.id}`",
            f"Use a built-in type (str, int, list[str], Literal[...]...) or pass "
            f'custom_types={{"{node.id}": {node.id}}}.',
        )

    def value(self, node: ast.expr) -> Any:
        """A name or dotted name: a type, or a module/class to look inside."""
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Attribute):
            owner = self.value(node.value)
            if node.attr.startswith("_") or not isinstance(owner, type | types.ModuleType):
                raise self.fail(
                    node,
                    f"cannot look up `{node.attr}` in {owner!r}",
                    "Dotted type names must name a class inside a module or class.",
                )
            try:
                return getattr(owner, node.attr)
            except AttributeError:
                raise self.fail(
                    node,
                    f"unknown type name `{ast.unparse(node)}`",
                    f"Check the spelling; `{ast.unparse(node.value)}` has no `{node.attr}`.",
                ) from None
        raise self.fail(
            node,
            f"unsupported type syntax `{ast.unparse(node)}`",
            "Write a type such as int, list[str], dict[str, int] or Optional[float].",
        )

    def type_(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None:
                return None
            if node.value is Ellipsis:
                return Ellipsis
            if self.forward_refs and isinstance(node.value, str):
                return self.forward_ref(node, node.value)
            raise self.fail(
                node,
                f"{node.value!r} is a value, not a type",
                "Quote values only inside Literal[...], e.g. Literal['yes', 'no'].",
            )
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            left, right = self.type_(node.left), self.type_(node.right)
            try:
                # typing.Union, as DSPy's string signatures give (equal to `left | right`)
                return typing.Union[left, right]  # noqa: UP007
            except TypeError:
                raise self.fail(
                    node, f"cannot combine `{ast.unparse(node)}` with |", "Use Union[...]."
                ) from None
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        obj = self.value(node)
        if isinstance(obj, types.ModuleType) or not is_type_like(obj):
            raise self.fail(
                node,
                f"`{ast.unparse(node)}` is not a type (it is {type(obj).__name__})",
                "Name a class or a typing construct.",
            )
        return obj

    def forward_ref(self, node: ast.Constant, text: str) -> Any:
        try:
            inner = ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            raise self.fail(node, f"invalid quoted type {text!r}", "Quote a type name.") from None
        try:
            return _Evaluator(self.lookup, [0], self.forward_refs).type_(inner)
        except TypeExprError as exc:  # report at the quoted string
            raise self.fail(node, exc.problem, exc.fix) from None

    def subscript(self, node: ast.Subscript) -> Any:
        base = self.type_(node.value)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base is typing.Literal:
            args: tuple[Any, ...] = tuple(self.literal(item) for item in items)
        elif getattr(base, "__dspex_custom_type__", False):  # Code["java"]: a quoted argument
            args = tuple(
                item.value
                if isinstance(item, ast.Constant) and isinstance(item.value, str)
                else self.type_(item)
                for item in items
            )
        else:
            args = tuple(self.type_(item) for item in items)
        try:
            return base[args if len(args) != 1 else args[0]]
        except TypeError as exc:
            raise self.fail(
                node, f"bad type arguments in `{ast.unparse(node)}`: {exc}", "Fix the brackets."
            ) from None

    def literal(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, _LITERAL_CONSTANTS):
            return node.value
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and isinstance(number := node.operand.value, int | float)
            and not isinstance(number, bool)
        ):
            return -number
        if isinstance(node, ast.Attribute):
            member = self.value(node)
            if isinstance(member, enum.Enum):
                return member
        raise self.fail(
            node,
            f"`{ast.unparse(node)}` is not allowed in Literal[...]",
            "Literal values are strings, numbers, booleans, None or Enum members.",
        )


def caller_lookup() -> Callable[[str], Any]:
    """A lookup over the locals and globals of the first frame outside dspex.

    The frame is found now (while the caller's frame is on the stack) and read
    lazily; only type-like objects and modules are returned.
    """
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not (module == "dspex" or module.startswith("dspex.")):
            break
        frame = frame.f_back  # type: ignore[assignment]
    f_locals = frame.f_locals if frame is not None else {}
    f_globals = frame.f_globals if frame is not None else {}
    return namespace_lookup(f_locals, f_globals)


def namespace_lookup(*namespaces: Mapping[str, Any]) -> Callable[[str], Any]:
    """A lookup over the given namespaces in order (type-like objects and modules only)."""

    def lookup(name: str) -> Any:
        for ns in namespaces:
            if name in ns:
                obj = ns[name]
                if isinstance(obj, types.ModuleType) or is_type_like(obj):
                    return obj
        raise KeyError(name)

    return lookup


_TYPING_NAMES = {
    getattr(typing, n): n
    for n in ("Dict", "FrozenSet", "List", "Mapping", "Sequence", "Set", "Tuple")
}


def type_to_text(annotation: Any) -> str:
    """Render an annotation as signature type text (``list[str]``, ``Optional[int]``...)."""
    if annotation is None or annotation is _NONE_TYPE:
        return "None"
    if annotation is Ellipsis:
        return "..."
    if annotation is typing.Any:
        return "Any"
    if isinstance(annotation, types.UnionType):
        # ``a | b`` equals ``Union[a, b]`` and typing's caches hand back either one
        # for the other (``tuple[date | None, ...]`` may come back holding
        # ``Optional[date]``): render both the same way so the text is stable.
        annotation = typing.Union[annotation.__args__]  # noqa: UP007
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if len(args) == 2 and _NONE_TYPE in args:
            other = args[0] if args[1] is _NONE_TYPE else args[1]
            return f"Optional[{type_to_text(other)}]"
        return f"Union[{', '.join(type_to_text(a) for a in args)}]"
    if origin is typing.Literal:
        return f"Literal[{', '.join(_literal_text(v) for v in args)}]"
    if isinstance(annotation, types.GenericAlias):
        inner = ", ".join(type_to_text(a) for a in args) if args else "()"
        return f"{type_to_text(origin)}[{inner}]"
    if annotation in _TYPING_NAMES:
        return _TYPING_NAMES[annotation]
    name = getattr(annotation, "_name", None)
    if origin is not None and isinstance(name, str):
        return f"{name}[{', '.join(type_to_text(a) for a in args)}]"
    if isinstance(annotation, type):
        qualname = annotation.__qualname__
        return annotation.__name__ if "<locals>" in qualname else qualname
    return repr(annotation).replace("typing.", "")


def _literal_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    return repr(value)
