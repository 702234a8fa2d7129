"""Model ids: what a ``"provider/name"`` id must look like, with a guess for a typo.

Free of pydantic, so ``dspex.LM(...)`` checks its id without loading the
settings schema.
"""

from __future__ import annotations

__all__ = ["PROVIDERS", "model_id_problem"]

PROVIDERS: tuple[str, ...] = ("anthropic", "gemini", "local", "openai")
"""Providers a model id may name: ``"<provider>/<model name>"``."""

# litellm provider prefixes DSPy users write for servers that speak OpenAI's wire format.
_OPENAI_COMPATIBLE = frozenset(
    {
        "ollama",
        "ollama_chat",
        "vllm",
        "hosted_vllm",
        "openrouter",
        "together_ai",
        "lm_studio",
        "llamacpp",
        "groq",
        "deepseek",
    }
)
_PROVIDER_ALIASES = {"google": "gemini", "vertex_ai": "gemini", "claude": "anthropic"}
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("claude", "anthropic"),
    ("gemini", "gemini"),
)


def _model_id_hint(provider: str, name: str, has_slash: bool) -> str:
    if not has_slash:
        for prefix, likely in _NAME_HINTS:
            if provider.lower().startswith(prefix):
                return f"; did you mean '{likely}/{provider}'?"
        return ""
    if provider in _OPENAI_COMPATIBLE:
        return (
            f"; '{provider}' serves OpenAI's wire format: use 'openai/{name}' "
            "and set api_base to the server's URL"
        )
    import difflib  # only a refused value needs a guess

    close = difflib.get_close_matches(provider.lower(), PROVIDERS, n=1, cutoff=0.6)
    guess = _PROVIDER_ALIASES.get(provider) or (close[0] if close else None)
    return f"; did you mean '{guess}/{name}'?" if guess else ""


def model_id_problem(model: str) -> str | None:
    """What is wrong with ``model`` as a ``"provider/name"`` id (with a guess), or None."""
    provider, slash, name = model.partition("/")
    spaced = any(c.isspace() for c in model)
    if slash and provider in PROVIDERS:
        if name and not spaced:
            return None
        hint = f"; no model name follows '{provider}/'" if not name else "; remove the whitespace"
    else:
        hint = _model_id_hint(provider, name, bool(slash))
    return f"must look like 'provider/name' with provider one of {', '.join(PROVIDERS)}{hint}"
