"""The OpenAI-compatible embeddings wire format (``POST {api_base}/embeddings``).

An embeddings request travels the LM stack like a chat request: its inputs
are the contents of its messages (one user message per text), so the cache
key, the rate limiter's token estimate and the history see the texts. The
reply becomes an :class:`LMResponse` with no completions and one vector per
input, in input order.

llama.cpp's Python server (llama-cpp-python, seen with 0.3.16) answers a model without a
pooling layer (a chat model such as SmolLM2) with one vector *per token*, and
fails on more than one input per request; ``max_inputs=1`` and ``pool="mean"``
adapt to that (the client fans a batch out and averages token vectors).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from dspex.actors._lm._providers._base import HTTPCall
from dspex.actors._lm._providers._openai import OpenAIProvider
from dspex.actors._lm._types import LMRequest, LMResponse, Usage
from dspex.errors import UsageError

__all__ = ["EmbeddingsProvider"]

Pool = Literal["none", "mean"]
_POOLS = ("none", "mean")


class EmbeddingsProvider(OpenAIProvider):
    """``POST {api_base}/embeddings`` with ``Authorization: Bearer`` (OpenAI's errors)."""

    def __init__(
        self,
        *,
        max_inputs: int | None = None,
        pool: Pool = "none",
        json_schema_style: Any = "openai",
    ) -> None:
        # json_schema_style is accepted (the local model's client options carry
        # it for chat) and has nothing to rewrite here.
        super().__init__(json_schema_style=json_schema_style)
        if max_inputs is not None and (
            isinstance(max_inputs, bool) or not isinstance(max_inputs, int) or max_inputs < 1
        ):
            raise UsageError(f"max_inputs={max_inputs!r} is invalid; use an int >= 1 or None")
        if pool not in _POOLS:
            raise UsageError(f"pool={pool!r} is not supported; use one of {_POOLS}")
        self.max_inputs = max_inputs
        self.pool = pool

    def __repr__(self) -> str:
        return f"EmbeddingsProvider(max_inputs={self.max_inputs!r}, pool={self.pool!r})"

    def build(self, request: LMRequest, *, api_base: str | None, api_key: str | None) -> HTTPCall:
        key = self._key_or_fail(request, api_base, api_key)
        texts = inputs_of(request)
        body: dict[str, Any] = {"model": self.model_name(request.model), "input": texts}
        body.update(self._params(request))
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        return HTTPCall(
            "POST", f"{self.base_url(api_base)}/embeddings", headers, body, self.secret_headers
        )

    def split(self, request: LMRequest) -> tuple[LMRequest, ...]:
        """``request`` cut into requests of at most ``max_inputs`` inputs each."""
        size = self.max_inputs
        if size is None or len(request.messages) <= size:
            return (request,)
        return tuple(
            dataclasses.replace(request, messages=request.messages[i : i + size])
            for i in range(0, len(request.messages), size)
        )

    def merge(self, responses: list[LMResponse], *, model: str) -> LMResponse:
        usage = Usage()
        vectors: list[tuple[float, ...]] = []
        for response in responses:
            usage = usage + response.usage
            vectors.extend(response.embeddings)
        return LMResponse((), usage, model, embeddings=tuple(vectors))

    def _parse_body(self, data: Any, *, model: str) -> LMResponse:
        if "data" not in data and "error" in data:
            return super()._parse_body(data, model=model)  # raises the error it carries
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        vectors = tuple(self._vector(item["embedding"]) for item in items)
        usage = data.get("usage") or {}
        prompt = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        return LMResponse((), Usage(prompt, 0), model, embeddings=vectors)

    def _vector(self, value: Any) -> tuple[float, ...]:
        if not isinstance(value, list) or not value:
            raise ValueError(f"an embedding is {type(value).__name__}, not a list of numbers")
        if isinstance(value[0], list):  # one vector per token
            if self.pool != "mean":
                raise ValueError(
                    "the server returned one vector per token (a model without pooling); "
                    "use a pooling embedding model"
                )
            width = len(value[0])
            sums = [0.0] * width
            for row in value:
                if len(row) != width:
                    raise ValueError("token vectors of different lengths")
                for i, x in enumerate(row):
                    sums[i] += float(x)
            return tuple(x / len(value) for x in sums)
        return tuple(float(x) for x in value)


def inputs_of(request: LMRequest) -> list[str]:
    """The texts to embed: each message's content, which must be a string."""
    if not request.messages:
        raise UsageError(f"model {request.model!r}: nothing to embed; pass at least one text")
    texts: list[str] = []
    for i, message in enumerate(request.messages):
        content = message.get("content") if hasattr(message, "get") else None
        if not isinstance(content, str):
            raise UsageError(f"embedding input {i} is {content!r}; every input must be a string")
        texts.append(content)
    return texts
