"""``dspex.ColBERTv2``: a client of a ColBERTv2 search server, and DSPy's ``dotdict``.

DSPy's ``dspy.ColBERTv2``: ``ColBERTv2(url="http://host:8893/api/search")``
asks the server for the top ``k`` passages of a query, by GET
(``?query=...&k=...``) or, with ``post_requests=True``, by POST of
``{"query", "k"}``; the reply is ``{"topk": [{"text", "pid", "score", ...}]}``.
Each passage comes back as a :class:`dotdict` (GET also sets ``long_text``
to ``text``, as DSPy does). It is not an LM, so it does not use the LM
client: one ``httpx.Client`` per retriever, with a timeout, and answers kept
in a small in-memory cache.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from cachetools import LRUCache

from dspex.errors import RetrieverError, UsageError

__all__ = ["ColBERTv2", "dotdict"]

_CACHE_ENTRIES = 1024
_MAX_K = 100  # the hosted ColBERTv2 servers answer at most 100 passages


class dotdict(dict[str, Any]):  # noqa: N801 - DSPy's public name
    """A dict whose keys read and write as attributes (DSPy's ``dotdict``)."""

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") and key.endswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no key {key!r}; keys: {sorted(self)}"
            ) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __deepcopy__(self, memo: dict[int, Any]) -> dotdict:
        import copy

        return dotdict(copy.deepcopy(dict(self), memo))


class ColBERTv2:
    """A ColBERTv2 search server: ``ColBERTv2(url=..., port=None, post_requests=False)``.

    Call it with a query: ``rm(query, k=10)`` returns a list of :class:`dotdict`
    passages (``simplify=True``: just their texts). ``timeout`` bounds each
    request in seconds. Failures raise :class:`dspex.errors.RetrieverError`.
    Usable as ``dspex.configure(rm=ColBERTv2(...))`` for :class:`dspex.Retrieve`.
    """

    def __init__(
        self,
        url: str = "http://0.0.0.0",
        port: str | int | None = None,
        post_requests: bool = False,
        *,
        timeout: float = 10.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UsageError(
                f"ColBERTv2(url={url!r}) must be an http(s) URL such as "
                "'http://localhost:8893/api/search'"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise UsageError(f"ColBERTv2(timeout={timeout!r}) must be a number of seconds > 0")
        self.post_requests = post_requests
        self.url = f"{url}:{port}" if port else url
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._cache: LRUCache[tuple[str, str, int], list[dict[str, Any]]] = LRUCache(_CACHE_ENTRIES)

    def __call__(
        self, query: str, k: int = 10, simplify: bool = False
    ) -> list[str] | list[dotdict]:
        if not isinstance(query, str):
            raise UsageError(f"ColBERTv2 query={query!r} must be a string")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= _MAX_K:
            raise UsageError(f"ColBERTv2 k={k!r} is invalid; use an int from 1 to {_MAX_K}")
        method = "POST" if self.post_requests else "GET"
        key = (method, query, k)
        with self._lock:
            topk = self._cache.get(key)
        if topk is None:
            topk = self._request(method, query, k)
            with self._lock:
                self._cache[key] = topk
        if simplify:
            return [str(p.get("long_text", p.get("text", ""))) for p in topk]
        return [dotdict(p) for p in topk]

    def _request(self, method: str, query: str, k: int) -> list[dict[str, Any]]:
        payload: dict[str, str | int] = {"query": query, "k": k}
        try:
            client = self._http()
            if method == "GET":
                reply = client.get(self.url, params=payload)
            else:
                reply = client.post(self.url, json=payload)
        except httpx.TimeoutException as exc:
            raise RetrieverError(
                f"ColBERTv2 at {self.url}: no answer within {self.timeout:g}s "
                f"({type(exc).__name__}); raise timeout= or check the server",
                url=self.url,
            ) from exc
        except httpx.HTTPError as exc:
            raise RetrieverError(
                f"ColBERTv2 at {self.url}: request failed ({type(exc).__name__}: {exc}); is the "
                "server running at that URL?",
                url=self.url,
            ) from exc
        if reply.status_code >= 400:
            raise RetrieverError(
                f"ColBERTv2 at {self.url}: HTTP {reply.status_code}: "
                f"{reply.text[:200].strip() or 'no body'}",
                url=self.url,
                status=reply.status_code,
            )
        try:
            data = reply.json()
        except ValueError as exc:
            raise RetrieverError(
                f"ColBERTv2 at {self.url}: the reply is not JSON ({reply.text[:100]!r})",
                url=self.url,
                status=reply.status_code,
            ) from exc
        if isinstance(data, dict) and data.get("error"):
            message = data.get("message", "Unknown error")
            raise RetrieverError(
                f"ColBERTv2 server returned an error: {message}",
                url=self.url,
                status=reply.status_code,
            )
        topk = data.get("topk") if isinstance(data, dict) else None
        if not isinstance(topk, list) or not all(isinstance(p, dict) for p in topk):
            raise RetrieverError(
                f"ColBERTv2 server returned an unexpected response (no 'topk' list): "
                f"{str(data)[:200]}",
                url=self.url,
                status=reply.status_code,
            )
        topk = topk[:k]
        if method == "GET":
            topk = [{**p, "long_text": p.get("text")} for p in topk]
        return topk

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=self.timeout, trust_env=True)
            return self._client

    def close(self) -> None:
        """Close the HTTP connections (a later call opens new ones)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"ColBERTv2({self.url!r}, post_requests={self.post_requests})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_client", "_cache"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._client = None
        self._cache = LRUCache(_CACHE_ENTRIES)

    def __deepcopy__(self, memo: dict[int, Any]) -> ColBERTv2:
        return self  # a client is shared, like an LM: copies of a program use the same server
