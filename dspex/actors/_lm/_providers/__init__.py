"""Provider wire formats for the LM client: request building, reply parsing, errors.

Pure code with no I/O of its own: the LM client's engine builds an
:class:`HTTPCall`, sends it with :func:`send` over one of its transports
(``_transport``: httptools, h11 or httpx), and gets an ``LMResponse`` or an error from
the ``LMError`` tree.

Names load on first use, so a process that speaks only OpenAI's format
never imports Anthropic's or Gemini's (the registry loads a provider's
module when a model id first names it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.actors._lm._providers._anthropic import DEFAULT_MAX_TOKENS, AnthropicProvider
    from dspex.actors._lm._providers._base import (
        ContextOverflow,
        HTTPCall,
        Provider,
        merge_responses,
        parse_retry_after,
        send,
        split_n,
    )
    from dspex.actors._lm._providers._embeddings import EmbeddingsProvider
    from dspex.actors._lm._providers._gemini import GeminiProvider, gemini_schema
    from dspex.actors._lm._providers._openai import OpenAIProvider
    from dspex.actors._lm._providers._registry import APIS, PROVIDERS, resolve_provider
    from dspex.actors._lm._providers._responses import ResponsesProvider

# public name -> private module defining it (imported on first attribute access)
_LAZY: dict[str, str] = {
    "APIS": "_registry",
    "DEFAULT_MAX_TOKENS": "_anthropic",
    "PROVIDERS": "_registry",
    "AnthropicProvider": "_anthropic",
    "ContextOverflow": "_base",
    "EmbeddingsProvider": "_embeddings",
    "GeminiProvider": "_gemini",
    "HTTPCall": "_base",
    "OpenAIProvider": "_openai",
    "Provider": "_base",
    "ResponsesProvider": "_responses",
    "gemini_schema": "_gemini",
    "merge_responses": "_base",
    "parse_retry_after": "_base",
    "resolve_provider": "_registry",
    "send": "_base",
    "split_n": "_base",
}

__all__ = [
    "APIS",
    "DEFAULT_MAX_TOKENS",
    "PROVIDERS",
    "AnthropicProvider",
    "ContextOverflow",
    "EmbeddingsProvider",
    "GeminiProvider",
    "HTTPCall",
    "OpenAIProvider",
    "Provider",
    "ResponsesProvider",
    "gemini_schema",
    "merge_responses",
    "parse_retry_after",
    "resolve_provider",
    "send",
    "split_n",
]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
