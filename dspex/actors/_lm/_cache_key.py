"""The response cache key, and the one table of what each request parameter is for.

Every parameter a call carries (the LM's keyword arguments, the settings'
defaults, ``dspex.context`` overrides, the call's own) falls in one of three
categories, looked up in :data:`PARAMS`:

* **sent**: goes to the provider and into the cache key (it shapes the answer).
  Any name not in the table is sent, so provider-specific parameters pass
  through (``top_p``, ``seed``, ``reasoning_effort``...).
* **keyed**: into the cache key, never sent (it must separate answers, but the
  provider has no such parameter).
* **neither**: how to make the call, not what to ask (timeouts, retries, the
  cache switch, client settings, the endpoint and its key): never sent,
  never in the key, so changing them keeps cached answers.

Two rules hold at any depth regardless of the table: a value under a
secret-looking name (``api_key``, ``Authorization``...; see
:func:`dspex.config.is_secret_key`) and a ``None`` value are left out of the
key. A secret nested in a sent value (``extra_headers``) is still sent.

The key is SHA-256 of canonical JSON of model, endpoint scope, messages and
keyed parameters. Its bytes must never change for a given request, or every
disk cache written by an earlier version stops hitting (tests pin a few).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from dspex.actors._lm._types import LMRequest

__all__ = ["PARAMS", "ParamUse", "param_use", "request_key", "request_params", "wire_params"]


class ParamUse(enum.Enum):
    """What a request parameter is for (see the module docstring)."""

    SENT = "sent"
    KEYED = "keyed"
    NEITHER = "neither"


_SENT, _KEYED, _NEITHER = ParamUse.SENT, ParamUse.KEYED, ParamUse.NEITHER

PARAMS: Mapping[str, ParamUse] = {
    # -- sent (the default for any other name; the common ones, for the record) --
    "temperature": _SENT,  # sampling: a different temperature is a different answer
    "max_tokens": _SENT,  # bounds the answer (OpenAI reasoning models get it renamed)
    "n": _SENT,  # how many completions; providers without n get it fanned out
    "stop": _SENT,  # where the answer ends
    "response_format": _SENT,  # structured output; providers translate OpenAI's shape
    # -- keyed, never sent --
    # DSPy's way to ask again for the same prompt (optimizers, BestOfN, Refine):
    # a fresh cache entry, the same request on the wire.
    "rollout_id": _KEYED,
    # A provider option (how response_format is spelt for llama.cpp), set through
    # provider_options; one that strays into the parameters is not sent, and has
    # always been part of the key, so it stays there.
    "json_schema_style": _KEYED,
    # DSPy's LM state fields for fine-tuning, written by DSPy's save(): loading
    # such a file passes them to dspex.LM, where they land among the request
    # parameters. No provider takes them (OpenAI refuses unknown parameters),
    # and they have always been part of the key, so they stay there.
    "finetuning_model": _KEYED,
    "launch_kwargs": _KEYED,
    "train_kwargs": _KEYED,
    # Which API the call is for ("responses", "embeddings"; absent for chat, so
    # chat keys keep their bytes): the same messages to the same model under
    # another API are another answer. The client's provider already speaks it.
    "model_type": _KEYED,
    # -- neither: how the call is made, never what is asked --
    "api_key": _NEITHER,  # a secret: sent only as the client's auth header, never keyed
    "api_base": _NEITHER,  # the endpoint: in the key as its scope, not as a parameter
    "base_url": _NEITHER,  # DSPy/litellm's name for api_base
    "cache": _NEITHER,  # the cache switch itself (cache=False skips the lookup)
    "timeout": _NEITHER,  # per-call option: seconds per attempt
    "num_retries": _NEITHER,  # per-call option: attempts after the first
    # Client settings (dspex.LM keyword arguments that configure its supervised
    # client; every LMClientConfig field): they change pacing and failure
    # handling, never the answer, and no provider takes them.
    "rpm": _NEITHER,
    "tpm": _NEITHER,
    "backoff_base": _NEITHER,
    "backoff_max": _NEITHER,
    "breaker_failure_threshold": _NEITHER,
    "breaker_reset_timeout": _NEITHER,
    "max_in_flight": _NEITHER,
    "transport": _NEITHER,
    "max_response_bytes": _NEITHER,
}


def param_use(name: str) -> ParamUse:
    """The category of parameter ``name``: sent unless the table says otherwise."""
    return PARAMS.get(name, _SENT)


def request_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What a request carries (an LMRequest's ``params``): sent and keyed parameters."""
    return {k: v for k, v in params.items() if PARAMS.get(k) is not _NEITHER}


def wire_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """What is sent to the provider: sent parameters that are not None."""
    return {k: v for k, v in params.items() if v is not None and PARAMS.get(k, _SENT) is _SENT}


def request_key(request: LMRequest, api_base: str | None = None) -> str:
    """SHA-256 (hex) of the canonical request: model, endpoint, messages, keyed params.

    ``api_base`` is the endpoint's cache scope (its URL, or a stable identity
    for an ephemeral local server), so two endpoints serving the same model
    name never collide. Never holds an API key (see the module docstring).
    """
    # Canonical JSON of {"model", "api_base", "messages", "params"} with sorted keys,
    # written out piece by piece (the same bytes json.dumps gives for the dict):
    # every message but the last is one a call repeats (the system message, demos,
    # earlier turns), so its JSON is remembered rather than escaped again.
    messages = request.messages
    parts = [_message_json(m) for m in messages[:-1]]
    if messages:
        parts.append(_encode(_scrubbed_message(messages[-1])))
    text = (
        f'{{"api_base":{_encode(api_base)},"messages":[{",".join(parts)}],'
        f'"model":{_encode(request.model)},"params":{_encode(_scrubbed(request_params(request.params)))}}}'
    )
    return hashlib.sha256(text.encode()).hexdigest()


_MESSAGE_JSON: dict[tuple[str, str], str] = {}  # (role, content) -> the message's JSON
# Bounds: entries, and characters (the key keeps its content alive too); past
# either the memo starts afresh. Approximate under threads, which is enough.
_MESSAGE_JSON_KEPT = 1024
_MESSAGE_JSON_CHARS = 4_000_000
_memo_chars = [0]


def _message_json(message: Any) -> str:
    """The canonical JSON of one message, remembered for a plain ``{role, content}``."""
    if type(message) is dict and len(message) == 2:
        role, content = message.get("role"), message.get("content")
        if type(role) is str and type(content) is str:
            key = (role, content)
            found = _MESSAGE_JSON.get(key)
            if found is None:
                found = _encode(message)  # a plain message is its own scrubbed form
                size = len(found) + len(content)
                if (
                    len(_MESSAGE_JSON) >= _MESSAGE_JSON_KEPT
                    or _memo_chars[0] + size > _MESSAGE_JSON_CHARS
                ):
                    _MESSAGE_JSON.clear()
                    _memo_chars[0] = 0
                _MESSAGE_JSON[key] = found
                _memo_chars[0] += size
            return found
    return _encode(_scrubbed_message(message))


# Message keys that are not secret-named: a message of only these, with string
# values, is its own scrubbed form (the common case, checked without recursion).
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id"})


def _scrubbed_message(message: Any) -> Any:
    """``_scrubbed(message)``, skipping the copy for a plain ``{role, content}`` dict."""
    if type(message) is dict:
        for k, v in message.items():
            if type(v) is not str or k not in _PLAIN_MESSAGE_KEYS:
                return _scrubbed(message)
        return message
    return _scrubbed(message)


@functools.lru_cache(maxsize=1024)
def _is_secret(name: str) -> bool:
    from dspex.config import is_secret_key

    return is_secret_key(name)


def _scrubbed(value: Any) -> Any:
    """``value`` without secret-named mapping keys and None values, at any depth."""
    if isinstance(value, Mapping):
        return {
            str(k): _scrubbed(v)
            for k, v in value.items()
            if not _is_secret(str(k)) and v is not None
        }
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """Fallback for json.dumps: schemas for model classes, dicts for models and sets."""
    schema = getattr(value, "model_json_schema", None)
    if isinstance(value, type) and callable(schema):
        return {"$schema_of": value.__qualname__, "schema": schema()}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(repr(v) for v in value)
    return repr(value)


# What json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
# default=_jsonable) does, built once: the same bytes without a new encoder per call.
_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable
).encode
