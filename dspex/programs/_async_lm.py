"""``acall_lm``: :func:`~dspex.programs._callbacks.call_lm` awaited on the caller's loop.

A ``dspex.LM`` answers on the event loop that awaits it (no thread per call,
see ``dspex.actors._lm._async_call``); any other LM object runs its blocking
``generate`` in dspex's async pool. Either way the callbacks, module history
and usage tracker see the call exactly as on the sync path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dspex.actors import LM
from dspex.actors._callbacks import active_callbacks, end_call, start_call
from dspex.programs._async_pool import in_thread
from dspex.programs._callbacks import call_lm
from dspex.programs._module_history import record_lm_call
from dspex.programs._usage import note_usage

__all__ = ["acall_lm", "awaits_natively"]


def awaits_natively(lm: Any) -> bool:
    """Whether ``lm`` answers on the caller's event loop (a plain ``dspex.LM``)."""
    return isinstance(lm, LM) and lm.awaits_natively


async def acall_lm(
    lm: Any, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
) -> Any:
    """``call_lm(lm, messages, params)``, awaited; hooks run in the loop's thread."""
    if not awaits_natively(lm):
        return await in_thread(call_lm, lm, messages, params)
    callbacks = active_callbacks(lm)
    if not callbacks:
        response = await lm.agenerate(messages, params)
        note_usage(lm, response)
        record_lm_call(lm, messages, params, response)
        return response
    inputs = {"prompt": None, "messages": messages, "kwargs": dict(params)}
    call = start_call(callbacks, "lm", lm, inputs)
    texts: list[str] | None = None
    error: BaseException | None = None
    try:
        response = await lm.agenerate(messages, params)
        note_usage(lm, response)
        record_lm_call(lm, messages, params, response)
        texts = [completion.text for completion in response.completions]
        return response
    except BaseException as exc:
        error = exc
        raise
    finally:
        end_call(callbacks, "lm", call, texts, error)
