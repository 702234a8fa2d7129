"""Which provider speaks for a model id such as ``openai/gpt-4o-mini``.

Provider classes are named by module here and imported when a model id
first needs one: ``LM("openai/...")`` loads neither Anthropic's format nor
Gemini's, and checking an id loads none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dspex.errors import UsageError

if TYPE_CHECKING:
    from dspex.actors._lm._providers._base import Provider

__all__ = ["ACCEPTED_FORMS", "check_model_id", "resolve_provider"]  # and PROVIDERS, APIS (lazy)

# prefix -> (module under _providers, class): the chat format of each provider.
_CHAT: dict[str, tuple[str, str]] = {
    "anthropic": ("_anthropic", "AnthropicProvider"),
    "gemini": ("_gemini", "GeminiProvider"),
    "openai": ("_openai", "OpenAIProvider"),
}
# api -> prefix -> (module, class): wire formats other than chat.
_OTHER_APIS: dict[str, dict[str, tuple[str, str]]] = {
    "responses": {"openai": ("_responses", "ResponsesProvider")},
    "embeddings": {"openai": ("_embeddings", "EmbeddingsProvider")},
}


def _load(where: tuple[str, str]) -> type[Provider]:
    module = importlib.import_module(f"dspex.actors._lm._providers.{where[0]}")
    cls: type[Provider] = getattr(module, where[1])
    return cls


def __getattr__(name: str) -> Any:
    # PROVIDERS / APIS as dicts of classes, for code that wants them all (loads them all).
    if name == "PROVIDERS":
        return {prefix: _load(where) for prefix, where in _CHAT.items()}
    if name == "APIS":
        return {
            api: {prefix: _load(where) for prefix, where in table.items()}
            for api, table in _OTHER_APIS.items()
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    valid = ", ".join(f"'{p}/'" for p in _CHAT)
    if not isinstance(model, str):
        raise UsageError(f"model={model!r} must be a string such as 'openai/gpt-4o-mini'")
    prefix, sep, name = model.partition("/")
    if not sep or prefix not in _CHAT:
        raise UsageError(
            f"model={model!r} has no known provider prefix; start it with one of {valid} "
            "(an OpenAI-compatible server is 'openai/<model>' plus api_base=...)"
        )
    if not name:
        raise UsageError(f"model={model!r} names no model after '{prefix}/'")
    api = options.pop("api", "chat")
    where = _CHAT[prefix]
    if api != "chat":
        for_api = _OTHER_APIS.get(api, {}).get(prefix) if isinstance(api, str) else None
        if for_api is None:
            speakers = sorted(_OTHER_APIS.get(api, {})) if isinstance(api, str) else []
            hint = (
                f"only {', '.join(repr(p + '/') for p in speakers)} models speak it"
                if speakers
                else f"use one of {['chat', *_OTHER_APIS]}"
            )
            raise UsageError(f"model={model!r}: the {api!r} API is not available; {hint}")
        where = for_api
    cls = _load(where)
    try:
        provider = cls(**options)
    except TypeError as exc:
        raise UsageError(
            f"provider {prefix!r} does not take options {sorted(options)}: {exc}"
        ) from exc
    return provider, provider.model_name(model)
