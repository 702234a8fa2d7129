"""``DummyLM``: an in-process LM that replays scripted answers, for tests.

It serves the LM protocol (``generate(messages, params) -> LMResponse``) with
DSPy's three modes:

1. a list of answer dicts, returned in order, one per completion;
2. a dict mapping a substring of the prompt to an answer dict (the last
   message is searched first, then the whole conversation);
3. ``follow_examples=True``: answer with the outputs of the demo whose inputs
   match the current inputs (falls back to mode 1/2 when none matches).

Answers are written as the adapters expect: ``[[ ## field ## ]]`` sections
ending with ``[[ ## completed ## ]]``, or a JSON object when the request
carries ``response_format`` or JSONAdapter's prompt asks for one. Like DSPy's
DummyLM it lists no ``supported_params``, so JSONAdapter sends it no
``response_format``. Every call is recorded in ``history``. Calls may
come from several threads at once.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from enum import Enum
from typing import Any

from dspex.actors._lm._openai_shape import outputs_to_lm_response
from dspex.actors._lm._streaming import STREAM_TO
from dspex.actors._lm._types import Completion, LMResponse, Message, Usage
from dspex.actors._telemetry_emitter import new_uuid

__all__ = ["DummyLM", "DummyVectorizer"]

NO_MORE = "No more responses"
_COMPLETED = "[[ ## completed ## ]]"


def _plain(value: Any) -> Any:
    """JSON-ready form of an answer value (models, enums, dates included)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return _plain(dump(mode="json"))
    to_dict = getattr(value, "toDict", None)
    if callable(to_dict) and not isinstance(value, type):
        return _plain(to_dict())
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value


def format_chat_answer(answer: Mapping[str, Any]) -> str:
    """An answer dict in ChatAdapter's reply format."""
    parts = []
    for name, value in answer.items():
        plain = _plain(value)
        text = (
            json.dumps(plain, indent=2, ensure_ascii=False)
            if isinstance(plain, dict | list)
            else str(plain)
        )
        parts.append(f"[[ ## {name} ## ]]\n{text}")
    parts.append(_COMPLETED)
    return "\n\n".join(parts)


def format_json_answer(answer: Mapping[str, Any]) -> str:
    """An answer dict as the JSON object JSONAdapter expects."""
    return json.dumps({k: _plain(v) for k, v in answer.items()}, indent=2, ensure_ascii=False)


def _content(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


# JSONAdapter's system message says this; no other adapter's does.
_JSON_PROMPT = "Outputs will be a JSON object with the following fields."


def _asks_for_json(messages: Sequence[Message]) -> bool:
    return bool(messages) and _JSON_PROMPT in _content(messages[0])


def _input_blocks(text: str) -> list[str]:
    """The ``[[ ## field ## ]]`` sections of a user message (inputs only)."""
    return [b for b in text.split("\n\n") if b.startswith("[[ ## ")]


class DummyLM:
    """A scripted LM for tests (see the module docstring for the three modes).

    ``json_answers`` forces the reply format (``True``: JSON, ``False``: chat
    markers); by default it follows the request's ``response_format``, or the
    ``adapter`` given, as DSPy's DummyLM does.

    ``history`` holds one dict per call with DSPy's keys (``prompt``,
    ``messages``, ``kwargs``, ``response``, ``outputs``, ``usage``, ``cost``,
    ``timestamp``, ``uuid``, ``model``, ``response_model``, ``model_type``):
    ``kwargs`` are the call's own parameters, ``params`` those merged over
    this LM's ``kwargs``. As DSPy's LMs do, it keeps the newest
    ``max_history_size`` calls and records nothing under ``disable_history``;
    ``calls`` counts every answered request regardless.
    """

    model: str
    kwargs: Mapping[str, Any]
    # DSPy's BaseLM defaults: no structured-output parameters.
    supports_response_schema = False
    supported_params: frozenset[str] = frozenset()

    def __init__(
        self,
        answers: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]] | None = None,
        follow_examples: bool = False,
        reasoning: bool = False,
        adapter: Any = None,
        *,
        json_answers: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if answers is not None and not isinstance(answers, Sequence | Mapping):
            raise TypeError(
                f"DummyLM(answers=...) takes a list of answer dicts or a dict of "
                f"prompt substring -> answer dict, got {type(answers).__name__}"
            )
        self.model = "dummy"
        self.model_type = "chat"
        self.cache = True  # DSPy's DummyLM attribute; replies are scripted, never cached
        self.kwargs = {"temperature": 0.0, "max_tokens": 1000, **kwargs}
        self.follow_examples = follow_examples
        self.reasoning = reasoning  # DSPy's flag for reasoning_content; kept for compatibility
        if json_answers is None and adapter is not None:
            # DSPy picks the reply format from an adapter; JSON-family adapters get JSON.
            json_answers = "json" in type(adapter).__name__.lower()
        self.json_answers = json_answers
        self.history: list[dict[str, Any]] = []
        self._calls = 0
        self._answers = answers if answers is not None else []
        self._next = 0
        self._lock = threading.Lock()

    # -- capabilities, as DSPy's BaseLM reports them (none: it is a script) -----------

    @property
    def supports_function_calling(self) -> bool:
        return False

    @property
    def supports_reasoning(self) -> bool:
        return False

    # -- the LM protocol ---------------------------------------------------------------

    def generate(self, messages: Sequence[Message], params: Mapping[str, Any]) -> LMResponse:
        """Answer one request with ``n`` scripted completions and record it.

        A subclass written for DSPy that overrides ``__call__`` (a slow LM, a
        counting one) is called through it, as DSPy's adapters call
        ``lm(messages=..., **params)``.
        """
        if type(self).__call__ is not DummyLM.__call__:
            outputs = self(messages=list(messages), **params)
            return outputs_to_lm_response(outputs, self.model)
        return self._generate(messages, params, None)

    def _generate(
        self, messages: Sequence[Message], params: Mapping[str, Any], prompt: str | None
    ) -> LMResponse:
        merged = {**self.kwargs, **params}
        n = int(merged.get("n") or 1)
        as_json = (
            self.json_answers
            if self.json_answers is not None
            else bool(merged.get("response_format")) or _asks_for_json(messages)
        )
        with self._lock:
            texts = [self._answer(messages, as_json) for _ in range(n)]
            prompt_chars = sum(len(_content(m)) for m in messages)
            usage = Usage(prompt_chars // 4, sum(len(t) for t in texts) // 4)
            response = LMResponse(
                completions=tuple(Completion(t, "stop") for t in texts),
                usage=usage,
                model=self.model,
            )
            self._calls += 1
            limit, recorded = _history_policy()
            if recorded:
                self.history.append(
                    {
                        "prompt": prompt,
                        "messages": list(messages),
                        "kwargs": dict(params),  # the call's own, as DSPy records them
                        "params": merged,
                        "response": response,
                        "outputs": texts,
                        "usage": usage,
                        "cost": None,
                        "timestamp": datetime.now().isoformat(),
                        "uuid": new_uuid(),
                        "model": self.model,
                        "response_model": self.model,
                        "model_type": self.model_type,
                    }
                )
                if len(self.history) > limit:
                    del self.history[: len(self.history) - limit]
        sink = STREAM_TO.get()
        if sink is not None and texts and texts[0]:
            # Inside dspex.streamify: the first answer streams word by word, as a provider would.
            for piece in re.findall(r"\S+\s*|\s+", texts[0]):
                sink(piece)
        return response

    def __call__(
        self, prompt: str | None = None, messages: Sequence[Message] | None = None, **kwargs: Any
    ) -> list[str]:
        """DSPy-style direct call: ``lm("hi")`` or ``lm(messages=[...])`` -> texts."""
        msgs = messages if messages is not None else [{"role": "user", "content": prompt or ""}]
        return self._generate(msgs, kwargs, prompt if messages is None else None).texts

    # -- answering ---------------------------------------------------------------------

    def _answer(self, messages: Sequence[Message], as_json: bool) -> str:
        if self.follow_examples:
            found = self._from_examples(messages)
            if found is not None:
                return found
        fmt = format_json_answer if as_json else format_chat_answer
        if isinstance(self._answers, Mapping):
            last = _content(messages[-1]) if messages else ""
            for key, answer in self._answers.items():
                if key in last:
                    return fmt(answer)
            whole = "\n".join(_content(m) for m in messages)
            for key, answer in self._answers.items():
                if key in whole:
                    return fmt(answer)
            return NO_MORE
        if self._next < len(self._answers):
            answer = self._answers[self._next]
            self._next += 1
            return fmt(answer)
        return fmt({"answer": NO_MORE})

    @staticmethod
    def _from_examples(messages: Sequence[Message]) -> str | None:
        """The demo reply whose user turn holds every input section of the final turn."""
        if len(messages) < 3:
            return None
        wanted = _input_blocks(_content(messages[-1]))
        if not wanted:
            return None
        for i in range(len(messages) - 3, -1, -1):
            user, reply = messages[i], messages[i + 1]
            if user.get("role") != "user" or reply.get("role") != "assistant":
                continue
            text = _content(user)
            if all(block in text for block in wanted):
                return _content(reply)
        return None

    # -- inspection and state --------------------------------------------------------

    def get_convo(self, index: int) -> tuple[list[Message], list[str]]:
        """The messages and outputs of call ``index`` (negative counts from the end)."""
        entry = self.history[index]
        return entry["messages"], entry["outputs"]

    @property
    def calls(self) -> int:
        """How many requests this LM has answered (history may hold fewer: see ``history``)."""
        return self._calls

    def reset(self) -> None:
        """Rewind the answer list and forget the history."""
        with self._lock:
            self._next = 0
            self._calls = 0
            self.history.clear()

    def dump_state(self) -> dict[str, Any]:
        """DSPy-style LM state (no answers: those live in the test)."""
        return {"model": self.model, "model_type": self.model_type, **self.kwargs}

    def __deepcopy__(self, memo: dict[int, Any]) -> DummyLM:
        return self  # a service shared by program copies, like a real LM client

    def __repr__(self) -> str:
        return f"DummyLM(calls={self._calls}, follow_examples={self.follow_examples})"


def _register() -> None:
    # DSPy's DummyLM is an LM subclass: isinstance(DummyLM(), BaseLM) holds there too.
    from dspex.actors._lm._base_lm import BaseLM

    BaseLM.register(DummyLM)


_register()


class DummyVectorizer:
    """A deterministic character n-gram embedder for tests (DSPy's ``DummyVectorizer``).

    Each text becomes a ``max_length`` vector of hashed n-gram counts, centred
    and scaled to unit length, so similar strings have a high dot product.
    """

    def __init__(self, max_length: int = 100, n_gram: int = 2) -> None:
        import random

        self.max_length = max_length
        self.n_gram = n_gram
        self._prime = 10**9 + 7
        rng = random.Random(123)  # fixed: the same vectors in every run
        self._coeffs = [rng.randrange(1, self._prime) for _ in range(n_gram)]

    def _bucket(self, gram: str) -> int:
        h = 1
        for coeff, ch in zip(self._coeffs, gram, strict=False):
            h = (h * coeff + ord(ch)) % self._prime
        return h % self.max_length

    def __call__(self, texts: Sequence[str]) -> Any:
        import numpy as np

        rows = []
        for text in texts:
            row = [0.0] * self.max_length
            for i in range(len(text) - self.n_gram + 1):
                row[self._bucket(text[i : i + self.n_gram])] += 1
            rows.append(row)
        vectors = np.array(rows, dtype=np.float32).reshape(len(rows), self.max_length)
        vectors -= vectors.mean(axis=1, keepdims=True)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-10
        return vectors


def _history_policy() -> tuple[int, bool]:
    """(bound, record?) for ``history`` from the settings where the call is made."""
    from dspex.programs import current_settings

    settings = current_settings()
    limit = int(settings.get("max_history_size", 10_000) or 0)
    return limit, bool(limit) and not settings.get("disable_history")
