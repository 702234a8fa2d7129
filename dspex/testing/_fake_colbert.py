"""A fake ColBERTv2 search server on 127.0.0.1, for testing ``dspex.ColBERTv2``.

It answers (at ``/api/search`` and ``/``) ``GET {url}?query=...&k=...`` and ``POST {url}`` with
``{"query", "k"}`` as the hosted ColBERTv2 servers do: ``{"topk": [{"text",
"pid", "rank", "score", "prob"}]}``, passages ranked by the words they share
with the query. ``error="..."`` makes it answer ``{"error": true, "message":
...}``; ``status`` an HTTP error; ``hang=True`` never answers (a timeout).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from dspex.errors import UsageError
from dspex.testing._fake_http import ConnectionAction, HTTPRequest, HTTPResponse, HTTPServerThread

__all__ = ["FakeColBERTv2"]

_WORD = re.compile(r"[a-z0-9]+")
PATH = "/api/search"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A search as the fake received it."""

    method: str
    query: str
    k: int


class FakeColBERTv2:
    """A ColBERTv2 server over ``passages``; ``url`` is its search endpoint."""

    def __init__(self, passages: Sequence[str], *, port: int = 0) -> None:
        if isinstance(passages, str) or not all(isinstance(p, str) for p in passages):
            raise UsageError("FakeColBERTv2(passages=...) takes a list of strings")
        self.passages = list(passages)
        self.error: str | None = None
        self.status: int | None = None
        self.hang = False
        self.raw: bytes | None = None
        self._lock = threading.Lock()
        self._searches: list[SearchRequest] = []
        self._server = HTTPServerThread(self._handle, name="dspex-fake-colbert", port=port)

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._server.host}:{self._server.port}{PATH}"

    @property
    def searches(self) -> list[SearchRequest]:
        with self._lock:
            return list(self._searches)

    def rank(self, query: str, k: int) -> list[dict[str, Any]]:
        """What the fake answers for ``query``: best word overlap first, then corpus order."""
        words = set(_WORD.findall(query.lower()))
        scored = [
            (len(words & set(_WORD.findall(p.lower()))), pid) for pid, p in enumerate(self.passages)
        ]
        scored.sort(key=lambda item: (-item[0], item[1]))
        total = sum(score for score, _ in scored[:k]) or 1
        return [
            {
                "text": self.passages[pid],
                "pid": pid,
                "rank": rank + 1,
                "score": float(score),
                "prob": score / total,
            }
            for rank, (score, pid) in enumerate(scored[:k])
        ]

    async def _handle(self, request: HTTPRequest) -> HTTPResponse | ConnectionAction:
        if request.path not in (PATH, "/"):
            return HTTPResponse(404, b'{"detail": "Not Found"}')
        if request.method == "GET":
            query, k = request.query.get("query"), request.query.get("k", "10")
        elif request.method == "POST":
            try:
                body = json.loads(request.body)
            except ValueError:
                return HTTPResponse(400, b'{"detail": "body is not JSON"}')
            query, k = body.get("query"), body.get("k", 10)
        else:
            return HTTPResponse(405, b'{"detail": "Method Not Allowed"}')
        try:
            count = int(k)
        except (TypeError, ValueError):
            return HTTPResponse(422, b'{"detail": "k must be an integer"}')
        if not isinstance(query, str):
            return HTTPResponse(422, b'{"detail": "query is required"}')
        with self._lock:
            self._searches.append(SearchRequest(request.method, query, count))
        if self.hang:
            return ConnectionAction.HANG
        if self.raw is not None:
            return HTTPResponse(200, self.raw, content_type="text/html")
        if self.status is not None:
            return HTTPResponse(self.status, b'{"detail": "injected failure"}')
        if self.error is not None:
            return HTTPResponse(200, json.dumps({"error": True, "message": self.error}).encode())
        payload = {"query": query, "topk": self.rank(query, count), "latency": 0.001}
        return HTTPResponse(200, json.dumps(payload).encode())
