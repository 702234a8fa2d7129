"""The string form of a signature: ``"question, context: list[str] -> answer: int"``.

:func:`parse_signature_text` splits the text into fields (name, side, type
expression) with character positions, so every :class:`SignatureError` can
point at the offending spot. The split is cached by text; resolving type names
(which depends on the caller) happens afterwards in ``_signature``.
"""

from __future__ import annotations

import ast
import keyword
from functools import lru_cache

from dspex._record import Record
from dspex.errors import SignatureError

from ._fields import FieldKind

__all__ = [
    "RESERVED_NAMES",
    "ParsedField",
    "field_name_problem",
    "parse_signature_text",
    "signature_error",
]

# Class-level attributes and methods of every signature; a field with one of
# these names would shadow them.
RESERVED_NAMES = frozenset(
    {
        "append",
        "append_instructions",
        "delete",
        "dump_state",
        "equals",
        "fields",
        "input_fields",
        "insert",
        "instructions",
        "load_state",
        "model_fields",
        "output_fields",
        "prepend",
        "signature",
        "to_string",
        "with_instructions",
        "with_updated_fields",
    }
)

_EXAMPLE = '"question, context: list[str] -> answer: int"'
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def signature_error(text: str, position: int, problem: str, fix: str) -> SignatureError:
    """A SignatureError quoting ``text``, the problem at ``position`` and the fix."""
    message = f'"{text}": {problem} (position {position}). {fix}'
    if "\n" not in text and len(text) <= 160:
        message += f"\n    {text}\n    {' ' * position}^"
    return SignatureError(message, signature=text, position=position)


def field_name_problem(name: str) -> tuple[str, str] | None:
    """Why ``name`` cannot be a field name, as (problem, fix); None if it can."""
    if not name.isidentifier():
        parts = name.split()
        if len(parts) > 1 and all(p.isidentifier() for p in parts):
            return (
                f"`{name}` is not a field name",
                f"Separate fields with commas: {', '.join(parts)}.",
            )
        return (
            f"`{name}` is not a valid field name",
            "Field names are Python identifiers: letters, digits and '_', "
            "not starting with a digit.",
        )
    if keyword.iskeyword(name):
        return (
            f"`{name}` is a reserved name (a Python keyword)",
            f"Rename the field, e.g. `{name}_` or `{name}_text`.",
        )
    if name.startswith("_"):
        return (
            f"`{name}` is a reserved name (names starting with '_' are private)",
            f"Rename the field without the leading underscore, e.g. `{name.lstrip('_') or 'x'}`.",
        )
    if name in RESERVED_NAMES:
        return (
            f"`{name}` is a reserved name (it would shadow Signature.{name})",
            f"Rename the field, e.g. `{name}_text`.",
        )
    return None


# NamedTuples, not frozen dataclasses: a dataclass costs ~0.5 ms to define on a cold start.
class ParsedField(Record):
    """One field of a signature string, before its type names are resolved."""

    name: str
    kind: FieldKind
    position: int  # of the name in the signature text
    type_tree: ast.expr | None  # None: untyped, meaning str
    type_text: str  # exactly as parsed (for evaluation positions)
    type_position: int  # of type_text in the signature text


class _Scan(Record):
    arrows: list[int]
    commas: list[int]


def _scan(text: str) -> _Scan:
    """Find depth-0 arrows and commas, skipping brackets and quoted strings."""
    arrows: list[int] = []
    commas: list[int] = []
    stack: list[tuple[str, int]] = []
    quote: str | None = None
    quote_at = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if quote is not None:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote, quote_at = ch, i
        elif ch in _OPENERS:
            stack.append((ch, i))
        elif ch in _CLOSERS:
            if not stack or stack[-1][0] != _CLOSERS[ch]:
                raise signature_error(
                    text, i, f"unmatched '{ch}'", "Check the brackets of the type."
                )
            stack.pop()
        elif not stack:
            if ch == "-" and text.startswith("->", i):
                arrows.append(i)
                i += 2
                continue
            if ch == ",":
                commas.append(i)
        i += 1
    if quote is not None:
        raise signature_error(
            text, quote_at, f"unterminated string {text[quote_at:]}", f"Close the {quote} quote."
        )
    if stack:
        opener, at = stack[-1]
        raise signature_error(
            text, at, f"'{opener}' is never closed", f"Add the matching '{_OPENERS[opener]}'."
        )
    return _Scan(arrows, commas)


@lru_cache(maxsize=1024)
def parse_signature_text(text: str) -> tuple[ParsedField, ...]:
    """Split a signature string into fields, inputs first; raises SignatureError."""
    if not isinstance(text, str):
        raise SignatureError(f"a signature string must be a str, got {type(text).__name__}")
    scan = _scan(text)
    if not scan.arrows:
        raise signature_error(
            text,
            0,
            "missing '->' between inputs and outputs",
            'Write it like "question -> answer".',
        )
    if len(scan.arrows) > 1:
        raise signature_error(
            text,
            scan.arrows[1],
            "more than one '->'",
            "A signature has exactly one arrow: inputs on the left, outputs on the right, "
            'like "question, context -> answer".',
        )
    arrow = scan.arrows[0]
    fields: list[ParsedField] = []
    seen: dict[str, ParsedField] = {}
    for kind, start, end in (("input", 0, arrow), ("output", arrow + 2, len(text))):
        cuts = [c for c in scan.commas if start <= c < end]
        bounds = list(zip([start, *(c + 1 for c in cuts)], [*cuts, end], strict=True))
        if not text[start:end].strip():
            side = "inputs" if kind == "input" else "outputs"
            where = "before" if kind == "input" else "after"
            raise signature_error(
                text,
                start,
                f"no {side} {where} '->'",
                f'Name at least one {kind} field, like "question -> answer".',
            )
        for index, (seg_start, seg_end) in enumerate(bounds):
            segment = text[seg_start:seg_end]
            if not segment.strip():
                if index == len(bounds) - 1:
                    continue  # a trailing comma, as Python allows in a parameter list
                raise signature_error(
                    text, seg_start, "empty field between commas", "Remove the extra ','."
                )
            parsed = _parse_field(text, kind, seg_start, segment)  # type: ignore[arg-type]
            previous = seen.get(parsed.name)
            if previous is not None:
                if previous.kind != parsed.kind:
                    raise signature_error(
                        text,
                        parsed.position,
                        f"field `{parsed.name}` is on both sides of '->'",
                        "Inputs and outputs need distinct names; rename the output, "
                        f"e.g. `{parsed.name}_out`.",
                    )
                raise signature_error(
                    text,
                    parsed.position,
                    f"duplicate field name `{parsed.name}`",
                    "Give each field a distinct name.",
                )
            seen[parsed.name] = parsed
            fields.append(parsed)
    return tuple(fields)


def _parse_field(text: str, kind: FieldKind, seg_start: int, segment: str) -> ParsedField:
    colon = segment.find(":")
    name_part = segment if colon < 0 else segment[:colon]
    name = name_part.strip()
    name_pos = seg_start + (len(name_part) - len(name_part.lstrip()))
    if not name:
        raise signature_error(
            text,
            name_pos,
            "missing field name before ':'",
            f"Write each field as `name` or `name: type`, like {_EXAMPLE}.",
        )
    problem = field_name_problem(name)
    if problem is not None:
        raise signature_error(text, name_pos, *problem)
    if colon < 0:
        return ParsedField(name, kind, name_pos, None, "", name_pos + len(name))
    type_raw = segment[colon + 1 :]
    type_text = type_raw.strip()
    type_pos = seg_start + colon + 1 + (len(type_raw) - len(type_raw.lstrip()))
    if not type_text:
        raise signature_error(
            text,
            seg_start + colon,
            f"missing type after `{name}:`",
            f"Write a type after the colon, like `{name}: int`, or drop the colon for str.",
        )
    try:
        tree = ast.parse(type_text, mode="eval").body
    except SyntaxError as exc:
        line_offset = (exc.offset or 1) - 1
        if (exc.lineno or 1) > 1:  # count from the start of the reported line
            lines = type_text.split("\n")
            line_offset += sum(len(line) + 1 for line in lines[: (exc.lineno or 1) - 1])
        raise signature_error(
            text,
            type_pos + min(line_offset, len(type_text)),
            f"invalid type `{type_text}` for field `{name}`",
            "Write a Python type expression, like list[str] or Literal['a', 'b'].",
        ) from None
    return ParsedField(name, kind, name_pos, tree, type_text, type_pos)
