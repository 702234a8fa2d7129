"""What a served program looks like over HTTP: its fields, their JSON schemas, input checks.

An :class:`Endpoint` is built once per program (and again after a reload)
from the program's signature: a ``Predict`` has one, a module with a single
predictor (``ChainOfThought``...) takes its predictor's, and any other module
takes its inputs from ``forward``'s parameters and leaves its outputs open.
The request is checked by a pydantic model with one field per input and no
extras, so a missing, unknown or mistyped field is refused before it reaches
the program, with the field's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

__all__ = ["Endpoint", "FieldDoc", "InputError", "endpoint_for", "to_json_bytes"]


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """One input or output field as the API lists it."""

    name: str
    type: str
    description: str | None
    schema: dict[str, Any]


class InputError(Exception):
    """A request body the program cannot take; ``errors`` name each field."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {"field": None, "message": "invalid request body"}
        where = f"field {first['field']!r}: " if first.get("field") else ""
        super().__init__(f"{where}{first['message']}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A served program's HTTP face: its fields and the model that checks a request."""

    name: str
    inputs: tuple[FieldDoc, ...]
    outputs: tuple[FieldDoc, ...]
    open_inputs: bool  # forward takes **kwargs: any JSON object is passed through
    open_outputs: bool  # the result's fields are not known in advance
    request_model: type[BaseModel]
    response_model: type[BaseModel] | None

    def parse(self, body: bytes) -> dict[str, Any]:
        """The program's keyword arguments from a JSON request body; raises :class:`InputError`."""
        try:
            checked = self.request_model.model_validate_json(body or b"null")
        except ValidationError as exc:
            raise InputError(_field_errors(exc)) from None
        values = {
            (info.alias or attr): getattr(checked, attr)
            for attr, info in type(checked).model_fields.items()
        }
        if self.open_inputs and checked.model_extra:
            values.update(checked.model_extra)
        return values

    def describe(self, root_path: str = "") -> dict[str, Any]:
        """The ``GET /v1/programs`` entry; ``root_path`` is where the app is mounted."""
        return {
            "name": self.name,
            "path": f"{root_path}/v1/programs/{self.name}",
            "inputs": [_doc(f) for f in self.inputs],
            "outputs": [_doc(f) for f in self.outputs],
            "open_inputs": self.open_inputs,
            "open_outputs": self.open_outputs,
        }


def _doc(field: FieldDoc) -> dict[str, Any]:
    return {"name": field.name, "type": field.type, "description": field.description}


def _field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = err.get("loc", ())
        kind = err.get("type", "")
        message = str(err.get("msg", "invalid value"))
        if kind == "missing":
            message = "this input field is required"
        elif kind == "extra_forbidden":
            message = "this program has no such input field"
        errors.append(
            {
                "field": ".".join(str(p) for p in loc) if loc else None,
                "type": kind,
                "message": message,
            }
        )
    return errors


# -- building ---------------------------------------------------------------------------


def _signature_of(program: Any) -> Any:
    """The signature that describes ``program``'s inputs and outputs, or None."""
    sig = getattr(program, "signature", None)
    if sig is not None and hasattr(sig, "input_fields"):
        return sig
    predictors = getattr(program, "predictors", None)
    if callable(predictors):
        try:
            found = list(predictors())
        except Exception:  # a module whose predictors() fails is described loosely
            found = []
        if len(found) == 1:
            return getattr(found[0], "signature", None)
    return None


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _usable(annotation: Any) -> Any:
    """``annotation`` if pydantic can check it and write its schema, else ``Any``."""
    try:
        TypeAdapter(annotation).json_schema()
    except Exception:  # a type pydantic cannot check (a custom class): accept any value
        return Any
    return annotation


_Spec = Mapping[str, tuple[Any, str | None, Any]]  # name -> (annotation, description, default)


def _fields(spec: _Spec) -> tuple[tuple[FieldDoc, ...], dict[str, Any]]:
    docs, model_fields = [], {}
    for i, (name, (annotation, desc, default)) in enumerate(spec.items()):
        usable = _usable(annotation)
        # Attribute names are positional: a field called ``schema`` or ``json``
        # must not shadow a BaseModel method; the alias is the wire name.
        model_fields[f"f{i}"] = (usable, Field(default, alias=name, description=desc))
        schema = TypeAdapter(usable).json_schema()
        docs.append(FieldDoc(name, _type_text(annotation), desc, schema))
    return tuple(docs), model_fields


def _description(field: Any) -> str | None:
    desc = getattr(field, "desc", None)
    if isinstance(desc, str) and desc and not desc.startswith("${"):
        return desc
    return None


def _model_name(name: str, suffix: str) -> str:
    words = [w for w in "".join(c if c.isalnum() else " " for c in name).split() if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + suffix


def endpoint_for(name: str, program: Any) -> Endpoint:
    """Describe ``program`` served as ``name``."""
    signature = _signature_of(program)
    open_inputs = False
    if signature is not None:
        ins = {n: (f.annotation, _description(f), ...) for n, f in signature.input_fields.items()}
        outs = {n: (f.annotation, _description(f), ...) for n, f in signature.output_fields.items()}
        open_outputs = False
    else:
        ins, open_inputs = _forward_inputs(program)
        outs, open_outputs = {}, True
    input_docs, input_fields = _fields(ins)
    output_docs, output_fields = _fields(outs)
    request_model = create_model(
        _model_name(name, "Request"),
        __config__=ConfigDict(extra="allow" if open_inputs else "forbid", populate_by_name=False),
        **input_fields,
    )
    response_model = None
    if not open_outputs:
        response_model = create_model(
            _model_name(name, "Response"), __config__=ConfigDict(extra="allow"), **output_fields
        )
    return Endpoint(
        name=name,
        inputs=input_docs,
        outputs=output_docs,
        open_inputs=open_inputs,
        open_outputs=open_outputs,
        request_model=request_model,
        response_model=response_model,
    )


def _forward_inputs(program: Any) -> tuple[dict[str, tuple[Any, str | None, Any]], bool]:
    forward = getattr(program, "forward", None) or program
    try:
        try:  # string annotations (``from __future__ import annotations``) resolved if possible
            params = inspect.signature(forward, eval_str=True).parameters.values()
        except Exception:
            params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return {}, True
    inputs: dict[str, tuple[Any, str | None, Any]] = {}
    open_inputs = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_inputs = True
        elif param.kind in (
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            annotation = param.annotation
            if annotation is inspect.Parameter.empty or isinstance(annotation, str):
                annotation = Any  # unannotated, or an annotation that did not resolve
            default = ... if param.default is inspect.Parameter.empty else param.default
            inputs[param.name] = (annotation, None, default)
    return inputs, open_inputs


# -- results ----------------------------------------------------------------------------


def result_fields(result: Any) -> Any:
    """A program's result as the JSON value to send: a Prediction's fields, a dict, or as-is."""
    to_dict = getattr(result, "toDict", None)
    if callable(to_dict):
        return to_dict()
    return result


def to_json_bytes(value: Any) -> bytes:
    """``value`` as compact JSON; pydantic models, dates and such converted, others as text."""
    from pydantic_core import to_json

    return to_json(value, fallback=str)
