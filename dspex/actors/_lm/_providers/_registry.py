"""Which provider speaks for a model id such as ``openai/gpt-4o-mini``."""

from __future__ import annotations

from typing import Any

from dspex.actors._lm._providers._anthropic import AnthropicProvider
from dspex.actors._lm._providers._base import Provider
from dspex.actors._lm._providers._embeddings import EmbeddingsProvider
from dspex.actors._lm._providers._gemini import GeminiProvider
from dspex.actors._lm._providers._openai import OpenAIProvider
from dspex.actors._lm._providers._responses import ResponsesProvider
from dspex.errors import UsageError

__all__ = ["ACCEPTED_FORMS", "APIS", "PROVIDERS", "check_model_id", "resolve_provider"]

PROVIDERS: dict[str, type[Provider]] = {
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
    "openai": OpenAIProvider,
}

APIS: dict[str, dict[str, type[Provider]]] = {
    "responses": {"openai": ResponsesProvider},
    "embeddings": {"openai": EmbeddingsProvider},
}
"""Wire formats other than chat (``provider_options={"api": ...}``), by provider prefix."""


ACCEPTED_FORMS = (
    "'openai/<model>' (OpenAI, or any OpenAI-compatible server such as vLLM, Ollama or "
    "OpenRouter with api_base=...), 'anthropic/<model>', 'gemini/<model>' or "
    "'local/<name>' (a GGUF model run by llama.cpp; needs dspex[local])"
)
"""The model ids dspex accepts, for error messages (``dspex.config.PROVIDERS``)."""


def check_model_id(model: Any, *, where: str = "LM") -> tuple[str, str]:
    """``(provider, name)`` of a model id such as ``openai/gpt-4o-mini``.

    Anything else raises ``UsageError`` naming the value, what is wrong (with a
    guess for a typo or a litellm-style prefix) and the accepted forms. DSPy
    would accept any string and fail at the first call; dspex knows its
    providers, so it refuses at construction.
    """
    from dspex.config._model_id import model_id_problem  # no pydantic: LM() stays cheap

    problem = model_id_problem(model) if isinstance(model, str) else "must be a string"
    if problem is None:
        provider, _, name = model.partition("/")
        return provider, name
    end = " " if problem.endswith("?") else ". "
    raise UsageError(f"{where}(model={model!r}) {problem}{end}Accepted forms: {ACCEPTED_FORMS}")


def resolve_provider(model: str, **options: Any) -> tuple[Provider, str]:
    """``(provider, model_name)`` for ``"<provider>/<model>"``.

    ``options`` go to the provider's constructor (``json_schema_style`` for
    ``openai/``). An unknown prefix or option raises ``UsageError``.
    """
    valid = ", ".join(f"'{p}/'" for p in PROVIDERS)
    if not isinstance(model, str):
        raise UsageError(f"model={model!r} must be a string such as 'openai/gpt-4o-mini'")
    prefix, sep, name = model.partition("/")
    if not sep or prefix not in PROVIDERS:
        raise UsageError(
            f"model={model!r} has no known provider prefix; start it with one of {valid} "
            "(an OpenAI-compatible server is 'openai/<model>' plus api_base=...)"
        )
    if not name:
        raise UsageError(f"model={model!r} names no model after '{prefix}/'")
    api = options.pop("api", "chat")
    cls = PROVIDERS[prefix]
    if api != "chat":
        cls_for_api = APIS.get(api, {}).get(prefix) if isinstance(api, str) else None
        if cls_for_api is None:
            speakers = sorted(APIS.get(api, {})) if isinstance(api, str) else []
            hint = (
                f"only {', '.join(repr(p + '/') for p in speakers)} models speak it"
                if speakers
                else f"use one of {['chat', *APIS]}"
            )
            raise UsageError(f"model={model!r}: the {api!r} API is not available; {hint}")
        cls = cls_for_api
    try:
        provider = cls(**options)
    except TypeError as exc:
        raise UsageError(
            f"provider {prefix!r} does not take options {sorted(options)}: {exc}"
        ) from exc
    return provider, provider.model_name(model)
