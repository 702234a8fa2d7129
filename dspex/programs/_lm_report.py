"""Reporting the calls of any LM to the running runtime, for history and metrics.

A ``dspex.LM`` reports its own calls; any other object serving the LM
protocol (``DummyLM``, a user's LM) is reported from here, by
:func:`~dspex.programs._callbacks.call_lm`, shaped as ``dspex.LM`` reports.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dspex.actors._current import current_runtime
from dspex.actors._lm._model import LM
from dspex.actors._telemetry_emitter import begin_lm_report, end_lm_report

if TYPE_CHECKING:
    from dspex.actors._telemetry_emitter import TelemetryEmitter

__all__ = ["generate_reported", "history_emitter"]


def history_emitter(lm: Any) -> TelemetryEmitter | None:
    """Where to report a call of ``lm`` for history and metrics, if anywhere.

    None for a ``dspex.LM`` (its handle reports its own calls) and when no
    runtime runs (history lives in a runtime; none is started for it).
    """
    if isinstance(lm, LM):
        return None
    runtime = current_runtime(start=False)  # history lives in a runtime: none is started
    return runtime.telemetry if runtime is not None else None


def generate_reported(
    emitter: TelemetryEmitter,
    lm: Any,
    messages: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
) -> Any:
    """``lm.generate(messages, params)``, reported to ``emitter`` as ``dspex.LM`` reports.

    Not reported again if an LM inside the call (a ``dspex.LM`` that ``lm``
    wraps) reported it already.
    """
    scope = begin_lm_report()
    started = time.perf_counter()
    try:
        response = lm.generate(messages, params)
    except BaseException as exc:
        if end_lm_report(scope):
            emitter.report_lm_call(_label(lm), messages, _since(started), error=exc)
        raise
    if end_lm_report(scope):
        emitter.report_lm_call(_label(lm), messages, _since(started), response, params=params)
    return response


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _label(lm: Any) -> str:
    model = getattr(lm, "model", None)
    return model if isinstance(model, str) and model else type(lm).__name__
