"""Provider wire formats for the LM client: request building, reply parsing, errors.

Pure code with no I/O of its own: the LM client's engine builds an
:class:`HTTPCall`, sends it with :func:`send` over one of its transports
(``_transport``: httptools, h11 or httpx), and gets an ``LMResponse`` or an error from
the ``LMError`` tree.
"""

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
