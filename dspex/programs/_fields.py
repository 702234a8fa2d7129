"""Signature fields: ``InputField``/``OutputField`` and the ``FieldInfo`` they return.

A ``FieldInfo`` is an immutable value. It is created unbound (no name) by
``InputField()``/``OutputField()`` and bound to a name when a signature is
built; binding fills in DSPy's defaults (a prefix inferred from the name and
the ``${name}`` description placeholder) in ``json_schema_extra``, the dict
DSPy user code and DSPy's saved state read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ._signature_types import type_to_text

__all__ = ["FieldInfo", "FieldKind", "InputField", "OutputField", "infer_prefix"]

FieldKind = Literal["input", "output"]

_CAMEL_WORD = re.compile(r"(.)([A-Z][a-z]+)")
_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_LETTER_DIGIT = re.compile(r"([a-zA-Z])(\d)")
_DIGIT_LETTER = re.compile(r"(\d)([a-zA-Z])")


def infer_prefix(name: str) -> str:
    """DSPy's prompt label for a field name, without the colon.

    ``question`` -> ``Question``, ``some_field`` -> ``Some Field``,
    ``userID`` -> ``User ID``, ``step2go`` -> ``Step 2 Go``.
    """
    snake = _LOWER_UPPER.sub(r"\1_\2", _CAMEL_WORD.sub(r"\1_\2", name))
    snake = _DIGIT_LETTER.sub(r"\1_\2", _LETTER_DIGIT.sub(r"\1_\2", snake))
    return " ".join(w if w.isupper() else w.capitalize() for w in snake.split("_"))


@dataclass(frozen=True, slots=True, eq=False)
class FieldInfo:
    """One input or output field of a signature: its kind, type and prompt text.

    ``desc`` is None when the user gave no description (DSPy then shows the
    ``${name}`` placeholder in saved state). ``prefix`` is ``""`` on an unbound
    field without an explicit prefix and always set once bound to a name.
    Use :meth:`replace` to derive a changed copy.
    """

    kind: FieldKind
    annotation: Any = str
    desc: str | None = None
    prefix: str = ""
    format: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    prefix_given: bool = False
    json_schema_extra: dict[str, Any] = field(init=False, repr=False)
    _key: tuple[Any, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        schema: dict[str, Any] = dict(self.extra)
        schema["__dspy_field_type"] = self.kind
        if self.name is not None:
            schema["desc"] = self.desc if self.desc is not None else f"${{{self.name}}}"
            schema["prefix"] = self.prefix
        else:
            if self.desc is not None:
                schema["desc"] = self.desc
            if self.prefix_given:
                schema["prefix"] = self.prefix
        if self.format is not None:
            schema["format"] = self.format
        object.__setattr__(self, "json_schema_extra", schema)
        object.__setattr__(
            self,
            "_key",
            (self.kind, self.annotation, self.desc, self.prefix, self.name, self.format),
        )

    @property
    def is_input(self) -> bool:
        """True for an input field."""
        return self.kind == "input"

    @property
    def is_output(self) -> bool:
        """True for an output field."""
        return self.kind == "output"

    def replace(self, **changes: Any) -> FieldInfo:
        """A copy with the given attributes changed (``desc``, ``prefix``, ``annotation``...).

        Setting ``prefix`` marks it as explicit, so renaming the field keeps it.
        """
        unknown = set(changes) - _REPLACEABLE
        if unknown:
            from dspex.errors import SignatureError

            raise SignatureError(
                f"FieldInfo.replace() got unknown attribute(s) {sorted(unknown)}; "
                f"use one of {sorted(_REPLACEABLE)}, or put custom keys in extra={{...}}."
            )
        values: dict[str, Any] = {
            "kind": self.kind,
            "annotation": self.annotation,
            "desc": self.desc,
            "prefix": self.prefix,
            "format": self.format,
            "extra": self.extra,
            "name": self.name,
            "prefix_given": self.prefix_given,
        }
        if "prefix" in changes and "prefix_given" not in changes:
            changes["prefix_given"] = True
        values.update(changes)
        return FieldInfo(**values)

    def bind(self, name: str) -> FieldInfo:
        """This field as declared under ``name``: DSPy's defaults filled in."""
        if self.name == name:
            return self
        desc = self.desc
        if desc == f"${{{name}}}" or (self.name is not None and desc == f"${{{self.name}}}"):
            desc = None  # DSPy's placeholder means "no description"
        prefix = self.prefix if self.prefix_given else infer_prefix(name) + ":"
        return FieldInfo(
            kind=self.kind,
            annotation=self.annotation,
            desc=desc,
            prefix=prefix,
            format=self.format,
            extra=self.extra,
            name=name,
            prefix_given=self.prefix_given,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldInfo):
            return NotImplemented
        return self._key == other._key and self.extra == other.extra

    def __hash__(self) -> int:
        try:
            return hash(self._key)
        except TypeError:  # an unhashable annotation or format
            return hash((self.kind, self.name, self.desc, self.prefix))

    def __repr__(self) -> str:
        ctor = "InputField" if self.kind == "input" else "OutputField"
        parts = [f"annotation={type_to_text(self.annotation)}"]
        if self.desc is not None:
            parts.append(f"desc={self.desc!r}")
        if self.prefix:
            parts.append(f"prefix={self.prefix!r}")
        if self.format is not None:
            parts.append(f"format={self.format!r}")
        parts.extend(f"{k}={v!r}" for k, v in self.extra.items())
        return f"{ctor}({', '.join(parts)})"


_REPLACEABLE = frozenset(
    {"kind", "annotation", "desc", "prefix", "format", "extra", "name", "prefix_given"}
)


# pydantic's field constraints, worded as DSPy words them in the prompt.
_CONSTRAINT_LABELS = {
    "gt": "greater than: ",
    "ge": "greater than or equal to: ",
    "lt": "less than: ",
    "le": "less than or equal to: ",
    "min_length": "minimum length: ",
    "max_length": "maximum length: ",
    "multiple_of": "a multiple of the given number: ",
    "allow_inf_nan": "allow 'inf', '-inf', 'nan' values: ",
}


def _make(
    kind: FieldKind,
    desc: str | None,
    prefix: str | None,
    format: Any,
    extra: dict[str, Any],
) -> FieldInfo:
    annotation = extra.pop("annotation", None)
    constraints = ", ".join(
        f"{label}{extra[key]}" for key, label in _CONSTRAINT_LABELS.items() if key in extra
    )
    if constraints and "constraints" not in extra:
        extra["constraints"] = constraints  # shown to the LM under the field, as in DSPy
    if desc is not None and not isinstance(desc, str):
        from dspex.errors import SignatureError

        raise SignatureError(
            f"desc={desc!r} must be a string; write {kind.capitalize()}Field(desc='...')."
        )
    return FieldInfo(
        kind=kind,
        annotation=str if annotation is None else annotation,
        desc=desc,
        prefix=prefix if prefix is not None else "",
        format=format,
        extra=extra,
        prefix_given=prefix is not None,
    )


def InputField(  # noqa: N802 - DSPy's public name
    *,
    desc: str | None = None,
    prefix: str | None = None,
    format: Any = None,
    **extra: Any,
) -> Any:
    """Declare an input field: ``question: str = InputField(desc="...")``.

    Returns a :class:`FieldInfo` (typed ``Any`` so ``x: int = InputField()``
    type-checks); extra keywords are kept in ``json_schema_extra``.
    """
    return _make("input", desc, prefix, format, extra)


def OutputField(  # noqa: N802 - DSPy's public name
    *,
    desc: str | None = None,
    prefix: str | None = None,
    format: Any = None,
    **extra: Any,
) -> Any:
    """Declare an output field: ``answer: int = OutputField(desc="...")``.

    Returns a :class:`FieldInfo` (typed ``Any`` so ``x: int = OutputField()``
    type-checks); extra keywords are kept in ``json_schema_extra``.
    """
    return _make("output", desc, prefix, format, extra)
