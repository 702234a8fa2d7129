"""``Signature``: the typed inputs and outputs of an LM call, plus its instructions.

A signature is a class, built three ways as in DSPy: a subclass with a
docstring and ``InputField``/``OutputField`` attributes, a string
(``Signature("question -> answer: int")``), or a dict of fields. Signatures are
immutable values: ``fields``, ``input_fields``, ``output_fields``,
``instructions`` and ``signature`` are plain class attributes computed once,
every operation returns a new class, and ``==``/``hash`` compare content.
"""

from __future__ import annotations

import ast
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from dspex.errors import SignatureError

from ._fields import FieldInfo
from ._signature_parse import field_name_problem
from ._signature_spec import check_instructions, check_type, fields_from_dict, from_string
from ._signature_types import (
    TypeExprError,
    caller_lookup,
    evaluate_type,
    is_type_like,
    namespace_lookup,
    type_to_text,
)

__all__ = ["Signature", "SignatureMeta", "ensure_signature", "make_signature", "new_signature"]

# Attributes an immutable signature owns; assigning them would silently break
# equality and hashing, so the metaclass refuses.
_PROTECTED = frozenset(
    {"__doc__", "fields", "input_fields", "instructions", "model_fields", "output_fields"}
    | {"signature"}
)
_FIELD_KWARGS = frozenset({"desc", "prefix", "format"})


def _default_instructions(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> str:
    ins = ", ".join(f"`{name}`" for name in inputs)
    outs = ", ".join(f"`{name}`" for name in outputs)
    return f"Given the fields {ins}, produce the fields {outs}."


def _cleandoc(text: str) -> str:
    import inspect  # lazily: keeps `import dspex` cheap

    return inspect.cleandoc(text)


class SignatureMeta(type):
    """Metaclass of signatures: builds fields from a class body, compares by content."""

    instructions: str
    fields: dict[str, FieldInfo]
    input_fields: dict[str, FieldInfo]
    output_fields: dict[str, FieldInfo]
    model_fields: dict[str, FieldInfo]
    signature: str
    _explicit_instructions: bool
    _key: tuple[Any, ...]
    _hash: int

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any], **kwargs: Any
    ) -> SignatureMeta:
        declared = {k: v for k, v in namespace.items() if isinstance(v, FieldInfo)}
        body = {k: v for k, v in namespace.items() if k not in declared}
        cls = super().__new__(mcs, name, bases, body, **kwargs)
        if not any(isinstance(b, SignatureMeta) for b in bases):
            _install(cls, {}, "", explicit=False)  # the root class, Signature itself
            return cls
        fields: dict[str, FieldInfo] = {}
        for base in reversed(cls.__mro__[1:]):
            if isinstance(base, SignatureMeta):
                fields.update(base.__dict__.get("fields", {}))
        annotations: dict[str, Any] = namespace.get("__annotations__", {})
        lookup: Callable[[str], Any] | None = None
        for attr, raw in annotations.items():
            if attr in declared or attr.startswith("__") or _is_classvar(raw):
                continue
            raise SignatureError(
                f"{name}.{attr}: the annotated attribute `{attr}` is not declared with "
                f"InputField() or OutputField(). Write `{attr}: {_ann_text(raw)} = "
                "InputField()` (or OutputField()), or mark it ClassVar."
            )
        for attr, field in declared.items():
            problem = field_name_problem(attr)
            if problem is not None:
                raise SignatureError(f"{name}.{attr}: {problem[0]}. {problem[1]}")
            annotation = annotations.get(attr, field.annotation)
            if isinstance(annotation, str):
                if lookup is None:
                    module = sys.modules.get(namespace.get("__module__", ""))
                    module_ns = vars(module) if module is not None else {}
                    lookup = _chain(namespace_lookup(namespace, module_ns), caller_lookup())
                annotation = _class_annotation(name, attr, annotation, lookup)
            elif not is_type_like(annotation):
                raise SignatureError(
                    f"{name}.{attr}: the annotation {annotation!r} is not a type. "
                    f"Write a type, like `{attr}: int = {_ctor(field)}(...)`."
                )
            fields.pop(attr, None)  # a redeclared field moves to its new kind's list
            changes: dict[str, Any] = {"annotation": annotation}
            if attr not in annotations and "IS_TYPE_UNDEFINED" not in field.extra:
                # DSPy's marker of a field declared without a type: str, unchecked
                changes["extra"] = {**field.extra, "IS_TYPE_UNDEFINED": True}
            fields[attr] = field.replace(**changes).bind(attr)
        doc = namespace.get("__doc__")
        explicit = doc is not None
        if doc is None:
            for base in cls.__mro__[1:]:
                if isinstance(base, SignatureMeta) and base._explicit_instructions:
                    doc = base.instructions
                    explicit = True
                    break
        _install(cls, fields, doc, explicit=explicit)
        return cls

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Signature:  # DSPy semantics: calling Signature builds a new class
            return make_signature(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __setattr__(cls, name: str, value: Any) -> None:
        # Re-assigning the value already there is no change (cloudpickle does it when
        # it rebuilds a class by value); anything else would mutate a shared value.
        if name in _PROTECTED and not (name in cls.__dict__ and cls.__dict__[name] == value):
            raise SignatureError(
                f"{cls.__name__}.{name} cannot be assigned: signatures are immutable values. "
                f"Build a new one instead, e.g. `sig = sig.with_instructions(...)` or "
                f"`sig.with_updated_fields(name, desc=...)`."
            )
        super().__setattr__(name, value)

    def __eq__(cls, other: object) -> bool:
        if not isinstance(other, SignatureMeta):
            return NotImplemented
        return cls is other or cls._key == other._key

    def __hash__(cls) -> int:
        return cls._hash

    def __repr__(cls) -> str:
        lines = [f"{name} = {field!r}" for name, field in cls.fields.items()]
        body = "".join(f"\n    {line}" for line in lines)
        return f"{cls.__name__}({cls.signature}\n    instructions={cls.instructions!r}{body}\n)"


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


def _ann_text(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else type_to_text(annotation)


def _ctor(field: FieldInfo) -> str:
    return "InputField" if field.kind == "input" else "OutputField"


def _chain(*lookups: Callable[[str], Any]) -> Callable[[str], Any]:
    def lookup(name: str) -> Any:
        for one in lookups:
            try:
                return one(name)
            except KeyError:
                continue
        raise KeyError(name)

    return lookup


def _class_annotation(cls_name: str, attr: str, text: str, lookup: Callable[[str], Any]) -> Any:
    """Resolve a string annotation (``from __future__ import annotations``) safely."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
        return evaluate_type(tree, text.strip(), lookup, forward_refs=True)
    except SyntaxError:
        problem, fix = f"invalid type `{text}`", "Write a type such as int or list[str]."
    except TypeExprError as exc:
        problem, fix = exc.problem, exc.fix
    raise SignatureError(f"{cls_name}.{attr}: {problem} in the annotation `{text}`. {fix}")


def _install(
    cls: SignatureMeta, fields: Mapping[str, FieldInfo], instructions: str | None, *, explicit: bool
) -> None:
    """Set the computed class attributes of a freshly created signature class."""
    inputs = {n: f for n, f in fields.items() if f.kind == "input"}
    outputs = {n: f for n, f in fields.items() if f.kind == "output"}
    ordered = {**inputs, **outputs}
    if instructions is None:
        instructions = _default_instructions(inputs, outputs)
    elif instructions:
        instructions = _cleandoc(instructions)
    key = (
        instructions,
        tuple((n, f.kind, f.annotation, f.desc, f.prefix) for n, f in ordered.items()),
    )
    try:
        hashed = hash(key)
    except TypeError:  # an unhashable annotation: fall back to names and text
        hashed = hash(
            (instructions, tuple((n, f.kind, f.desc, f.prefix) for n, f in ordered.items()))
        )
    values = {
        "__doc__": instructions,
        "instructions": instructions,
        "fields": ordered,
        "model_fields": ordered,
        "input_fields": inputs,
        "output_fields": outputs,
        "signature": f"{', '.join(inputs)} -> {', '.join(outputs)}",
        "_explicit_instructions": explicit,
        "_key": key,
        "_hash": hashed,
    }
    for attr, value in values.items():
        type.__setattr__(cls, attr, value)


def new_signature(
    name: str, fields: Mapping[str, FieldInfo], instructions: str | None, module: str | None = None
) -> type[Signature]:
    """A new signature class (a direct subclass of Signature) with these fields."""
    namespace = {"__module__": module or __name__, "__qualname__": name}
    cls = type.__new__(SignatureMeta, name, (Signature,), namespace)
    _install(cls, fields, instructions, explicit=instructions is not None)
    return typing.cast("type[Signature]", cls)


class Signature(metaclass=SignatureMeta):
    """Base class of all signatures; subclass it, or call it with a string or dict."""

    if typing.TYPE_CHECKING:  # what SignatureMeta.__call__ does, for type checkers

        def __new__(  # type: ignore[misc]
            cls,
            signature: str | Mapping[str, Any],
            instructions: str | None = None,
            signature_name: str = "StringSignature",
            custom_types: Mapping[str, Any] | None = None,
        ) -> type[Signature]: ...
    else:  # instances (rarely used) just hold field values

        def __init__(self, **values: Any) -> None:
            unknown = set(values) - set(type(self).fields)
            if unknown:
                raise SignatureError(
                    f"{type(self).__name__} has no field(s) {sorted(unknown)}; "
                    f"its fields are {list(type(self).fields)}."
                )
            for attr, value in values.items():
                object.__setattr__(self, attr, value)

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """A copy of this signature with new instructions."""
        if not isinstance(instructions, str):
            raise SignatureError(
                f"with_instructions() needs a str, got {type(instructions).__name__} "
                f"({instructions!r})."
            )
        return new_signature(cls.__name__, cls.fields, instructions, cls.__module__)

    @classmethod
    def append_instructions(cls, instructions: str) -> type[Signature]:
        """A copy whose instructions are this one's, a blank line, then ``instructions``."""
        if not isinstance(instructions, str):
            raise SignatureError(
                f"append_instructions() needs a str, got {type(instructions).__name__} "
                f"({instructions!r})."
            )
        return cls.with_instructions(f"{cls.instructions}\n\n{instructions}")

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **kwargs: Any) -> type[Signature]:
        """A copy with field ``name`` changed: ``type_``, and ``desc=``/``prefix=``/extras."""
        field = cls._field(name, "with_updated_fields")
        changes: dict[str, Any] = {k: v for k, v in kwargs.items() if k in _FIELD_KWARGS}
        extra = {k: v for k, v in kwargs.items() if k not in _FIELD_KWARGS}
        if "__dspy_field_type" in extra:
            kind = extra.pop("__dspy_field_type")
            if kind not in ("input", "output"):
                raise SignatureError(
                    f"__dspy_field_type={kind!r} for field `{name}` must be 'input' or 'output'."
                )
            changes["kind"] = kind
        if extra:
            changes["extra"] = {**field.extra, **extra}
        if type_ is not None:
            changes["annotation"] = check_type(name, type_)
        if changes.get("desc") == f"${{{name}}}":
            changes["desc"] = None
        fields = {n: (f.replace(**changes) if n == name else f) for n, f in cls.fields.items()}
        return new_signature(cls.__name__, fields, cls.instructions, cls.__module__)

    @classmethod
    def prepend(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A copy with the field added first among its kind (inputs or outputs)."""
        return cls.insert(0, name, field, type_)

    @classmethod
    def append(cls, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A copy with the field added last among its kind (inputs or outputs)."""
        return cls.insert(-1, name, field, type_)

    @classmethod
    def insert(cls, index: int, name: str, field: FieldInfo, type_: Any = None) -> type[Signature]:
        """A copy with the field at ``index`` among its kind; negative indices count
        from the end (-1 appends)."""
        if not isinstance(field, FieldInfo):
            raise SignatureError(
                f"insert({index}, {name!r}, ...): the field must be InputField() or "
                f"OutputField(), got {field!r}."
            )
        problem = field_name_problem(name) if isinstance(name, str) else ("not a str", "")
        if problem is not None:
            raise SignatureError(f"cannot add field {name!r}: {problem[0]}. {problem[1]}")
        if name in cls.fields:
            raise SignatureError(
                f"cannot add field `{name}`: {cls.__name__} already has it. "
                f"Use with_updated_fields({name!r}, ...) to change it, or pick another name."
            )
        if type_ is not None:
            field = field.replace(annotation=check_type(name, type_))
        group = list((cls.input_fields if field.kind == "input" else cls.output_fields).items())
        position = index + len(group) + 1 if index < 0 else index
        if not 0 <= position <= len(group):
            raise SignatureError(
                f"insert index {index} is out of range for the {len(group)} {field.kind} "
                f"field(s) of {cls.__name__}; use an index from {-len(group) - 1} to {len(group)}."
            )
        group.insert(position, (name, field.bind(name)))
        other = cls.output_fields if field.kind == "input" else cls.input_fields
        fields = {**dict(group), **other}
        return new_signature(cls.__name__, fields, cls.instructions, cls.__module__)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        """A copy without field ``name`` (an equal copy when there is no such field, as DSPy)."""
        fields = {n: f for n, f in cls.fields.items() if n != name}
        return new_signature(cls.__name__, fields, cls.instructions, cls.__module__)

    @classmethod
    def equals(cls, other: Any) -> bool:
        """DSPy's name for ``==``: same instructions and the same fields, in order."""
        return isinstance(other, SignatureMeta) and cls == other

    @classmethod
    def to_string(cls) -> str:
        """The typed string form, e.g. ``"a: int, b -> c: list[str]"`` (str types omitted)."""

        def part(name: str, field: FieldInfo) -> str:
            if field.annotation is str:
                return name
            return f"{name}: {type_to_text(field.annotation)}"

        ins = ", ".join(part(n, f) for n, f in cls.input_fields.items())
        outs = ", ".join(part(n, f) for n, f in cls.output_fields.items())
        return f"{ins} -> {outs}"

    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        """DSPy's saved form: instructions, and each field's prefix and description."""
        return {
            "instructions": cls.instructions,
            "fields": [
                {
                    "prefix": f.json_schema_extra["prefix"],
                    "description": f.json_schema_extra["desc"],
                }
                for f in cls.fields.values()
            ],
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        """A copy with the instructions and field texts of a :meth:`dump_state` dict."""
        if not isinstance(state, Mapping) or not isinstance(state.get("instructions"), str):
            raise SignatureError(
                f"signature state must be a dict with an 'instructions' string, got {state!r}."
            )
        saved = state.get("fields", [])
        if not isinstance(saved, list) or len(saved) != len(cls.fields):
            count = len(saved) if isinstance(saved, list) else saved
            raise SignatureError(
                f"signature state has {count} field(s) but {cls.__name__} ({cls.signature}) "
                f"has {len(cls.fields)}; load state saved from the same program."
            )
        fields: dict[str, FieldInfo] = {}
        for (name, field), entry in zip(cls.fields.items(), saved, strict=True):
            if not isinstance(entry, Mapping):
                raise SignatureError(f"state of field `{name}` must be a dict, got {entry!r}.")
            changes: dict[str, Any] = {}
            if "prefix" in entry:
                changes["prefix"] = str(entry["prefix"])
            if "description" in entry:
                desc = entry["description"]
                changes["desc"] = None if desc in (None, f"${{{name}}}") else str(desc)
            fields[name] = field.replace(**changes) if changes else field
        return new_signature(cls.__name__, fields, state["instructions"], cls.__module__)

    @classmethod
    def _field(cls, name: str, operation: str) -> FieldInfo:
        try:
            return cls.fields[name]
        except KeyError:
            raise SignatureError(
                f"{operation}({name!r}): {cls.__name__} has no field `{name}`; "
                f"its fields are {list(cls.fields)}."
            ) from None


def make_signature(
    signature: str | Mapping[str, Any],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    custom_types: Mapping[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature class from a string or a ``{name: field}`` dict (DSPy's make_signature).

    Dict values are ``InputField()``/``OutputField()`` or ``(type, field)`` pairs.
    Type names in a string resolve from builtins, typing and datetime names,
    ``custom_types`` and the caller's frame.
    """
    check_instructions(instructions)
    if isinstance(signature, str):
        return from_string(signature, instructions, signature_name, custom_types, new_signature)
    if isinstance(signature, Mapping):
        return new_signature(signature_name, fields_from_dict(signature), instructions)
    raise SignatureError(
        f"cannot build a signature from {type(signature).__name__} ({signature!r}); "
        'pass a string like "question -> answer", a dict of fields, or a Signature class.'
    )


@typing.overload
def ensure_signature(signature: None, instructions: str | None = None) -> None: ...


@typing.overload
def ensure_signature(
    signature: str | type[Signature] | Mapping[str, Any], instructions: str | None = None
) -> type[Signature]: ...


def ensure_signature(
    signature: str | type[Signature] | Mapping[str, Any] | None, instructions: str | None = None
) -> type[Signature] | None:
    """A signature class from a string (or dict), or the given class unchanged."""
    if signature is None:
        return None
    if isinstance(signature, SignatureMeta):
        if instructions is not None:
            raise SignatureError(
                f"ensure_signature() got instructions together with the signature class "
                f"{signature.__name__}; use {signature.__name__}.with_instructions(...) instead."
            )
        return signature
    return make_signature(signature, instructions)
