"""XMLAdapter: fields wrapped in ``<name>...</name>`` tags."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dspex.programs._adapters._base import STRUCTURE_INTRO, FieldPlan, field_placeholder
from dspex.programs._adapters._chat import ChatAdapter
from dspex.programs._adapters._values import format_input_value

__all__ = ["XMLAdapter"]

_FIELD = re.compile(r"<(?P<name>\w+)>(?P<content>.*?)</(?P=name)>", re.DOTALL)


class XMLAdapter(ChatAdapter):
    """Each field as ``<name>\\nvalue\\n</name>``; falls back to JSON like ChatAdapter.

    Values are written as ChatAdapter writes them (text, or JSON for
    structured values) and parsed the same way; tags are matched flat, the
    first occurrence of each output field winning.
    """

    def format_field_structure(self, signature: Any) -> str:
        parts = [
            STRUCTURE_INTRO,
            _tagged(signature.input_fields, is_input=True),
            _tagged(signature.output_fields, is_input=False),
        ]
        return "\n\n".join(parts).strip()

    def user_message_output_requirements(self, signature: Any) -> str | None:
        tags = ", then ".join(f"`<{name}>`" for name in signature.output_fields)
        return f"Respond with the corresponding output fields wrapped in XML tags {tags}."

    def format_field_block(self, field: FieldPlan, value: Any) -> str:
        text = format_input_value(field.annotation, value)
        return f"<{field.name}>\n{text}\n</{field.name}>"

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: Any = None
    ) -> str:
        block = self.format_field_block
        return "\n\n".join(
            block(f, outputs.get(f.name, missing_field_message))
            for f in self.plan(signature).outputs
        ).strip()

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        plan = self.plan(signature)
        sections: dict[str, str] = {}
        for match in _FIELD.finditer(completion):
            name = match.group("name")
            if name in plan.output_names and name not in sections:
                sections[name] = match.group("content").strip()
        fallbacks: dict[str, Any] = {}
        if len(sections) != len(plan.outputs):
            fallbacks = self.output_fallbacks(signature, sections) or {}
        if len(sections) + len(fallbacks) != len(plan.outputs):
            raise self.missing_fields_error(
                plan,
                list(sections),
                completion,
                "Wrap each output field in its tags, e.g. `<name>...</name>`.",
            )
        convert = self.convert_field
        return {
            f.name: (
                convert(f, sections[f.name], completion)
                if f.name in sections
                else fallbacks[f.name]
            )
            for f in plan.outputs
        }


def _tagged(fields: Mapping[str, Any], is_input: bool) -> str:
    return "\n\n".join(
        f"<{name}>\n{field_placeholder(name, info.annotation, is_input)}\n</{name}>"
        for name, info in fields.items()
    ).strip()
