"""XMLAdapter: fields wrapped in ``<name>...</name>`` tags, structured outputs as nested XML.

The wire format is DSPy 3.4.1's. Inputs and simple outputs are written as
``<name>\\nvalue\\n</name>`` (the value as ChatAdapter writes it). An output
whose type is a list, a dict, a TypedDict or a pydantic model is asked for as
nested XML: the prompt shows its skeleton (``<tags><item>...</item></tags>``)
and demos write the value that way. A reply is read as an XML tree; each
output tag becomes Python data shaped by the field's JSON schema (lists from
``<item>`` children, objects from named children), which the field's parser
then converts. JSON text inside a tag (``<tags>["a", "b"]</tags>``) is
accepted too.

A reply that is not well-formed XML only because of a bare ``&`` or ``<`` in
a value (``R&D < 5``) is read with those escaped, where DSPy fails it; any
other malformed reply is an ``AdapterParseError``, as in DSPy (ChatAdapter's
JSON fallback then applies).
"""

from __future__ import annotations

import functools
import re
import types
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any, Union, get_args, get_origin
from xml.sax.saxutils import quoteattr

from dspex.errors import AdapterParseError
from dspex.programs._adapters._base import STRUCTURE_INTRO, FieldPlan, field_placeholder
from dspex.programs._adapters._chat import ChatAdapter
from dspex.programs._adapters._values import format_input_value, to_jsonable

__all__ = ["XMLAdapter"]

# A '&' that starts no entity, and a '<' that starts no tag: text an LM forgot to escape.
_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)")
_BARE_LT = re.compile(r"<(?!/?[A-Za-z_][\w.\-]*\s*/?>|[A-Za-z_][\w.\-]*\s+[^<>]*>|!--)")
_ROOT = "dspex_root"


class XMLAdapter(ChatAdapter):
    """Each field as ``<name>...</name>``; falls back to JSON like ChatAdapter."""

    def format_field_structure(self, signature: Any) -> str:
        inputs = (
            _block(name, field_placeholder(name, info.annotation, True))
            for name, info in signature.input_fields.items()
        )
        outputs = (
            _skeleton(name, info.annotation)
            if _nested(info.annotation)
            else _block(name, _escape_if_str(info.annotation, _placeholder(name, info)))
            for name, info in signature.output_fields.items()
        )
        return "\n\n".join([STRUCTURE_INTRO, "\n\n".join(inputs), "\n\n".join(outputs)])

    def user_message_output_requirements(self, signature: Any) -> str | None:
        tags = ", then ".join(f"`<{name}>`" for name in signature.output_fields)
        text = f"Respond with the corresponding output fields wrapped in XML tags {tags}."
        skeletons = [
            _skeleton(name, info.annotation)
            for name, info in signature.output_fields.items()
            if _nested(info.annotation)
        ]
        if skeletons:
            text += f" Use this nested XML structure: {' '.join(skeletons)}"
        return text

    def format_field_block(self, field: FieldPlan, value: Any) -> str:
        return _block(field.name, format_input_value(field.annotation, value))

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        blocks = []
        for field in self.plan(signature).outputs:
            value = outputs.get(field.name, missing_field_message)
            data = to_jsonable(value)
            if _nested(field.annotation) and isinstance(data, dict | list):
                blocks.append(_to_xml(data, field.name))
            else:
                text = format_input_value(field.annotation, value)
                blocks.append(_block(field.name, _escape_if_str(field.annotation, text)))
        return "\n\n".join(blocks).strip()

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        plan = self.plan(signature)
        try:
            found = _output_elements(completion)
        except ET.ParseError as exc:
            name = type(self).__name__
            raise AdapterParseError(
                f"Adapter {name} failed to parse the LM response: Failed to parse XML: {exc}. "
                "Write each output field as "
                f"`<name>...</name>` with '&' and '<' in values escaped. "
                f"LM reply (also in .raw): {completion[:300]!r}",
                raw=completion,
                adapter=name,
            ) from exc
        return self.complete_outputs(
            plan,
            found,
            completion,
            "Wrap each output field in its tags, e.g. `<name>...</name>`.",
            convert=self._read_field,
        )

    def _read_field(self, field: FieldPlan, elements: list[ET.Element], raw: str) -> Any:
        """The field's value from its element(s): shaped by its schema, then converted."""
        schema, defs = _json_schema(field.annotation)
        shaped: list[Any] = []
        # The whole schema first (it handles Optional itself); then each alternative alone.
        for candidate in [schema, *schema.get("anyOf", [])]:
            try:
                data = _from_elements(elements, candidate, defs)
            except (ValueError, TypeError):
                continue
            shaped.append(data)
            try:
                return field.parse(data)
            except (ValueError, TypeError):
                pass
            try:  # tags carry field names; a model with aliases validates by name (as DSPy)
                return _validate_by_name(field.annotation, data)
            except Exception:  # pydantic's errors, or a type it cannot validate: next reading
                continue
        # None fits: convert_field raises the AdapterParseError naming field and type.
        return self.convert_field(field, shaped[0] if shaped else _text_of(elements), raw)


# -- writing --------------------------------------------------------------------------------


def _block(name: str, text: str) -> str:
    return f"<{name}>\n{text}\n</{name}>"


def _placeholder(name: str, info: Any) -> str:
    return field_placeholder(name, info.annotation, False)


def _escape(text: str) -> str:
    # Only what would break the reader: '&' and '<' (a '>' in text is legal XML).
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _escape_if_str(annotation: Any, text: str) -> str:
    """A ``str`` output's text as XML text (DSPy escapes only those)."""
    return _escape(text) if annotation is str else text


def _nested(annotation: Any) -> bool:
    """Whether an output of this type is written as nested XML rather than text."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]  # Optional[X] is written as X
    origin = get_origin(annotation)
    item = annotation
    if origin is list and get_args(annotation):
        item = get_args(annotation)[0]
    if _is_model(item) and item.__module__.split(".")[0] in ("dspex", "dspy"):
        return False  # dspex's own content types keep their text form
    return origin in (list, dict) or _is_typeddict(annotation) or _is_model(annotation)


def _is_typeddict(annotation: Any) -> bool:
    # typing.is_typeddict misses typing_extensions' TypedDict on 3.11 (pydantic needs that one).
    return (
        isinstance(annotation, type)
        and issubclass(annotation, dict)
        and hasattr(annotation, "__total__")
        and hasattr(annotation, "__required_keys__")
    )


def _is_model(annotation: Any) -> bool:
    if not isinstance(annotation, type):
        return False
    from pydantic import BaseModel

    return issubclass(annotation, BaseModel)


def _json_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """pydantic's JSON schema of ``annotation`` (field names, not aliases) and its $defs."""
    from pydantic import TypeAdapter

    try:
        schema: dict[str, Any] = TypeAdapter(annotation).json_schema(by_alias=False)
    except Exception:  # pydantic cannot describe it: read the tag as plain text
        return {}, {}
    return schema, schema.get("$defs", {})


def _skeleton(tag: str, annotation: Any) -> str:
    """The nested-XML shape the LM should write, e.g. ``<order><id>...</id></order>``."""
    schema, defs = _json_schema(annotation)
    return _skeleton_of(tag, schema, defs, frozenset())


def _skeleton_of(
    tag: str, schema: dict[str, Any], defs: dict[str, Any], seen: frozenset[str]
) -> str:
    ref = schema.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        if name in seen or name not in defs:  # a recursive model: stop at one level
            return f"<{tag}>...</{tag}>"
        return _skeleton_of(tag, defs[name], defs, seen | {name})
    options = schema.get("anyOf")
    if options:
        chosen = next((o for o in options if o.get("type") != "null"), options[0])
        return _skeleton_of(tag, chosen, defs, seen)
    if schema.get("type") == "array":
        return f"<{tag}>{_skeleton_of('item', schema.get('items', {}), defs, seen)}</{tag}>"
    inner = "".join(
        _skeleton_of(name, sub, defs, seen) for name, sub in schema.get("properties", {}).items()
    )
    return f"<{tag}>{inner or '...'}</{tag}>"


def _to_xml(data: Any, tag: str, key: str | None = None) -> str:
    """JSON-like ``data`` as nested XML: list items as ``<item>``, dict keys as tags.

    A key that cannot be a tag name becomes ``<entry key="...">``.
    """
    attrs = "" if key is None else f" key={quoteattr(key)}"
    if isinstance(data, list):
        inner = "".join(_to_xml(item, "item") for item in data)
    elif isinstance(data, dict):
        parts = []
        for raw_name, value in data.items():
            name = str(raw_name)
            if _tag_name(name):
                parts.append(_to_xml(value, name))
            else:
                parts.append(_to_xml(value, "entry", name))
        inner = "".join(parts)
        return f"<{tag}{attrs}>{inner}</{tag}>"
    elif data is None:
        inner = ""
    else:
        return f"<{tag}{attrs}>{_escape(str(data))}</{tag}>"
    return f"<{tag}{attrs}>{inner}</{tag}>" if inner else f"<{tag}{attrs} />"


@functools.lru_cache(maxsize=1024)
def _tag_name(name: str) -> bool:
    """Whether a dict key can be written as a tag (else it goes in ``<entry key=...>``)."""
    # '-' and '.' are legal after the first character (DSPy's test); a non-ASCII key
    # must also be a name the XML reader accepts, or the demo would not read back.
    if not (name[:1] + name[1:].replace("-", "_").replace(".", "_")).isidentifier():
        return False
    if name.isascii():
        return True
    try:
        ET.fromstring(f"<{name} />")
    except ET.ParseError:
        return False
    return True


# -- reading --------------------------------------------------------------------------------


def _output_elements(completion: str) -> dict[str, list[ET.Element]]:
    """The reply's top-level elements by tag (repeated tags kept in order).

    Raises ``ET.ParseError`` when the reply is not XML even with bare ``&``/``<`` escaped.
    """
    try:
        root = ET.fromstring(f"<{_ROOT}>{completion}</{_ROOT}>")
    except ET.ParseError:
        repaired = _BARE_LT.sub("&lt;", _BARE_AMP.sub("&amp;", completion))
        if repaired == completion:
            raise
        root = ET.fromstring(f"<{_ROOT}>{repaired}</{_ROOT}>")
    return _children(root)


def _children(element: ET.Element) -> dict[str, list[ET.Element]]:
    grouped: dict[str, list[ET.Element]] = {}
    for child in element:
        name = child.attrib.get("key", child.tag) if child.tag == "entry" else child.tag
        grouped.setdefault(name, []).append(child)
    return grouped


def _text_of(elements: list[ET.Element]) -> str:
    return (elements[0].text or "").strip()


def _from_elements(elements: list[ET.Element], schema: dict[str, Any], defs: dict[str, Any]) -> Any:
    """Python data from XML elements, guided by a JSON schema (leaves stay text)."""
    schema = _deref(schema, defs)
    first = elements[0]
    options = schema.get("anyOf")
    if options:
        empty = not list(first) and not (first.text or "").strip()
        if {"type": "null"} in options and empty:
            return None
        options = [_deref(o, defs) for o in options if o.get("type") != "null"]
        schema = options[0] if options else {}
        if list(first):  # children: prefer a structured alternative over text
            schema = next((o for o in options if o.get("type") != "string"), schema)
    if schema.get("type") == "array":
        if len(elements) == 1 and not list(first):
            text = (first.text or "").strip()
            if not text:
                return []
            if text.startswith("["):
                return text  # a JSON list in the tag: the field's parser reads it
        items = _children(first).get("item") if len(elements) == 1 else None
        if items:
            elements = items
        return [_from_elements([e], schema.get("items", {}), defs) for e in elements]
    if schema.get("type") == "string" and list(first):
        # Markup inside a text field is part of the text.
        return (first.text or "") + "".join(ET.tostring(c, encoding="unicode") for c in first)
    children = _children(first)
    if not children:
        if schema.get("type") == "object" and not (first.text or "").strip():
            return {}
        texts = [(e.text or "").strip() for e in elements]
        return texts[0] if len(texts) == 1 else texts
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", {})
    extra = extra if isinstance(extra, dict) else {}
    return {
        name: _from_elements(group, properties.get(name, extra), defs)
        for name, group in children.items()
    }


def _validate_by_name(annotation: Any, data: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation).validate_python(data, by_name=True)


def _deref(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        found: dict[str, Any] = defs.get(ref.rsplit("/", 1)[-1], schema)
        return found
    return schema
