"""What a model accepts, as DSPy 3.4.1 decides it: reasoning families and structured output.

DSPy reads these facts from a bundled model catalog. dspex keeps a small
table of the model families that catalog marks, enough to request the same
``response_format`` for the same model: a strict JSON schema where the model
supports one, ``{"type": "json_object"}`` where it supports only JSON mode, and
nothing for a model it does not know (a self-hosted ``openai/`` model, say).
``local/`` models are dspex's own: llama.cpp decodes under the JSON schema,
so they always take it.
"""

from __future__ import annotations

import re

from dspex._record import Record

__all__ = ["Capabilities", "capabilities", "is_openai_reasoning_model"]

# Pattern strings, compiled by ``re``'s own cache on first use: compiling all
# five at import cost ~1 ms of every cold start, and most processes use one or two.

# OpenAI's reasoning families (DSPy's rule): o1/o3/o4/o5 with an optional
# -mini/-nano/-pro and date suffix, and every gpt-5 generation except "-chat".
_REASONING = (
    r"^(?:o[1345](?:-(?:mini|nano|pro))?(?:-\d{4}-\d{2}-\d{2})?"
    r"|gpt-5(?:\.\d+)*(?!-chat)(?:-.*)?)$"
)

# Families whose catalog entry says "supports_response_schema".
_OPENAI_SCHEMA = (
    r"^(?:gpt-4o-mini(?:-.*)?|gpt-4o|gpt-4o-2024-(?:08-06|11-20)|gpt-4\.1(?:-.*)?"
    r"|gpt-5(?:\.\d+)*(?:-.*)?|o1|o1-2024-12-17|o1-pro(?:-.*)?|o3(?:-.*)?|o4-mini(?:-.*)?)$"
)
# Older chat models: function calling (so JSON mode) but no response schema.
_OPENAI_JSON_MODE = r"^(?:gpt-4(?:-.*)?|gpt-4o-.*|gpt-3\.5-turbo(?:-.*)?)$"
_ANTHROPIC_SCHEMA = r"^claude-(?:(?:opus|sonnet|haiku)-4|[a-z]+-4-)"
_GEMINI_SCHEMA = r"^gemini-(?:2\.5|[3-9])"

_BASE_PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stream"})


class Capabilities(Record):
    """``response_schema``: strict JSON schemas work; ``params``: OpenAI-style names it takes."""

    response_schema: bool
    params: frozenset[str]


def is_openai_reasoning_model(model: str) -> bool:
    """Whether ``model`` (``openai/gpt-5``, ``o3-mini``...) is an OpenAI reasoning model."""
    family = model.rsplit("/", 1)[-1].lower()
    return re.match(_REASONING, family) is not None


def capabilities(model: str) -> Capabilities:
    """The structured-output facts for a model id such as ``openai/gpt-4o-mini``."""
    provider, _, name = model.partition("/")
    name = name.lower()
    if provider == "local":
        return Capabilities(True, _BASE_PARAMS | {"response_format"})
    if provider == "openai":
        if re.match(_OPENAI_SCHEMA, name):
            return Capabilities(True, _BASE_PARAMS | {"response_format"})
        if re.match(_OPENAI_JSON_MODE, name):
            return Capabilities(False, _BASE_PARAMS | {"response_format"})
        return Capabilities(False, _BASE_PARAMS)
    if provider == "anthropic":
        schema = re.match(_ANTHROPIC_SCHEMA, name) is not None
        return Capabilities(schema, _BASE_PARAMS | ({"response_format"} if schema else set()))
    if provider == "gemini":
        # Gemini always takes a JSON mime type; a schema only on the families that support it.
        return Capabilities(
            re.match(_GEMINI_SCHEMA, name) is not None, _BASE_PARAMS | {"response_format"}
        )
    return Capabilities(False, _BASE_PARAMS)
