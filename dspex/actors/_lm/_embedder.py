"""``dspex.Embedder``: DSPy's ``dspy.Embedder``, through dspex's LM clients.

A model id (``"openai/text-embedding-3-small"``, ``"openai/<name>"`` with
``api_base=`` for vLLM, Ollama or llama.cpp, or ``"local/smollm2"``) is
reached through the runtime's supervised LM client for that model, speaking
the OpenAI-compatible ``/embeddings`` wire format: each batch is one call,
cached under a key from the one parameter table (``_cache_key``), retried,
rate-limited and sent over the same transports as chat calls. Any other
callable (``SentenceTransformer.encode``, a function) is called per batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache

from dspex.actors._async_pool import in_thread
from dspex.actors._lm._providers._registry import check_model_id
from dspex.actors._lm._resilience._config import LMClientConfig, setting_fix
from dspex.errors import ProviderError, UsageError

if TYPE_CHECKING:
    from dspex.actors._lm._handle import LMHandle
    from dspex.actors._runtime import Runtime

__all__ = ["Embedder"]

_CLIENT_KWARGS = tuple(f.name for f in dataclasses.fields(LMClientConfig))
_EMBEDDING_PROVIDERS = ("openai", "local")
_MEMO_BATCHES = 1024

Vectors = npt.NDArray[np.float32]


class Embedder:
    """Computes embeddings: ``Embedder(model, batch_size=200, caching=True, **kwargs)``.

    ``model`` is a model id or a callable taking a list of strings and
    returning one vector per string (a 2-D array or list of lists). Calling
    the embedder with a string returns a 1-D ``float32`` array; with a list
    of strings, a 2-D array with one row per input. ``kwargs`` are default
    request parameters (``dimensions=...``) or, for a callable, its keyword
    arguments; ``api_base``, ``api_key`` and client settings (``num_retries``,
    ``timeout``, ``rpm``, ``tpm``...) configure a model id's client.
    With ``caching``, a model id's batches go through the runtime's response
    cache (memory and disk); a callable's results are kept in memory, per
    embedder and batch.
    """

    def __init__(
        self,
        model: str | Callable[..., Any],
        batch_size: int = 200,
        caching: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(model, str):
            provider, _ = check_model_id(model, where="Embedder")
            if provider not in _EMBEDDING_PROVIDERS:
                raise UsageError(
                    f"Embedder(model={model!r}): {provider!r} has no embeddings endpoint in "
                    "dspex; use 'openai/<model>' (with api_base=... for vLLM, Ollama or "
                    "llama.cpp), 'local/smollm2', or pass a callable"
                )
        elif not callable(model):
            raise UsageError(
                f"Embedder(model={model!r}) must be a model id such as "
                "'openai/text-embedding-3-small' or a callable taking a list of strings"
            )
        _check_batch_size(batch_size, "Embedder")
        self.model = model
        self.batch_size = batch_size
        self.caching = caching
        self.api_base: str | None = None
        self._api_key: str | None = None
        self.client_settings: dict[str, Any] = {}
        if isinstance(model, str):
            self.api_base = kwargs.pop("api_base", None) or kwargs.pop("base_url", None)
            self._api_key = kwargs.pop("api_key", None)
            for name in _CLIENT_KWARGS:
                if name in kwargs:
                    value = kwargs.pop(name)
                    fix = setting_fix(name, value)
                    if fix is not None:
                        raise UsageError(f"Embedder({name}={value!r}) is invalid; use {fix}")
                    self.client_settings[name] = value
        self.default_kwargs: dict[str, Any] = kwargs
        self._handles: weakref.WeakKeyDictionary[Runtime, LMHandle] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # A callable's results, per batch (model ids use the runtime's cache).
        self._memo: LRUCache[str, tuple[Any, ...]] = LRUCache(_MEMO_BATCHES)

    def __call__(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Vectors:
        """Embeddings of ``inputs``: 1-D for a string, 2-D (one row each) for a list."""
        batches, use_cache, params, single = self._prepare(inputs, batch_size, caching, kwargs)
        rows: list[Any] = []
        for batch in batches:
            rows.extend(self._embed(batch, use_cache, params))
        return _as_array(rows, single)

    async def acall(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Vectors:
        """:meth:`__call__` without blocking the event loop (batches run in a worker thread)."""
        return await in_thread(self.__call__, inputs, batch_size, caching, **kwargs)

    # -- internals -----------------------------------------------------------------

    def _prepare(
        self,
        inputs: Any,
        batch_size: int | None,
        caching: bool | None,
        kwargs: dict[str, Any],
    ) -> tuple[list[list[str]], bool, dict[str, Any], bool]:
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, Sequence) or isinstance(texts, bytes):
            raise UsageError(f"Embedder inputs={inputs!r} must be a string or a list of strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise UsageError(
                    f"Embedder inputs[{i}]={text!r} is a {type(text).__name__}; every input "
                    "must be a string"
                )
        size = self.batch_size if batch_size is None else batch_size
        _check_batch_size(size, "Embedder call")
        params = {**self.default_kwargs, **kwargs}
        use_cache = self.caching if caching is None else caching
        batches = [list(texts[i : i + size]) for i in range(0, len(texts), size)]
        return batches, bool(use_cache), params, single

    def _embed(self, batch: list[str], use_cache: bool, params: dict[str, Any]) -> list[Any]:
        if not isinstance(self.model, str):
            key = _memo_key(batch, params) if use_cache else None
            with self._lock:
                memo = self._memo.get(key) if key is not None else None
            if memo is not None:
                return list(memo)
            out = self.model(batch, **params)
            rows = list(np.asarray(out, dtype=np.float32))
            if key is not None and len(rows) == len(batch):
                with self._lock:
                    self._memo[key] = tuple(rows)
        else:
            messages = [{"role": "user", "content": text} for text in batch]
            response = self.handle().generate(messages, {**params, "cache": use_cache})
            rows = [np.asarray(v, dtype=np.float32) for v in response.embeddings]
        if len(rows) != len(batch):
            raise ProviderError(
                f"Embedder({self._label()}): {len(batch)} inputs gave {len(rows)} embeddings; "
                "the model must return one vector per input",
                model=self._label(),
                retryable=False,
            )
        return rows

    def handle(self, runtime: Runtime | None = None) -> LMHandle:
        """This embedder's handle on its model's client in ``runtime`` (model ids only)."""
        if not isinstance(self.model, str):
            raise UsageError(f"Embedder({self._label()}) calls a function; it has no LM client")
        if runtime is None:
            from dspex.actors._current import current_runtime

            runtime = current_runtime()
        handle = self._handles.get(runtime)
        if handle is None or handle.slot.closed:
            with self._lock:
                handle = self._handles.get(runtime)
                if handle is None or handle.slot.closed:
                    handle = runtime.lm_handle(
                        self.model,
                        api_base=self.api_base,
                        api_key=self._api_key,
                        client={
                            **self.client_settings,
                            "provider_options": (("api", "embeddings"),),
                        },
                        defaults={"model_type": "embeddings"},
                        cache=True,
                    )
                    self._handles[runtime] = handle
        return handle

    def _label(self) -> str:
        model = self.model
        return repr(model) if isinstance(model, str) else getattr(model, "__name__", repr(model))

    def __repr__(self) -> str:
        extra = f", api_base={self.api_base!r}" if self.api_base else ""
        return f"Embedder({self._label()}{extra}, batch_size={self.batch_size})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_handles", None)
        state.pop("_lock", None)
        state.pop("_memo", None)
        state["_api_key"] = None  # a pickled embedder never carries the key
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._handles = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._memo = LRUCache(_MEMO_BATCHES)


def _check_batch_size(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{where}(batch_size={value!r}) is invalid; use an int >= 1")


def _memo_key(batch: list[str], params: dict[str, Any]) -> str:
    text = json.dumps([batch, params], sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _as_array(rows: list[Any], single: bool) -> Vectors:
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    try:
        array = np.asarray(np.stack(rows), dtype=np.float32)
    except ValueError as exc:
        raise ProviderError(
            f"Embedder: the {len(rows)} embeddings have different lengths ({exc}); use one model "
            "for all inputs",
            retryable=False,
        ) from exc
    return array[0] if single else array
