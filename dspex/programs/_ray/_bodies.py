"""The driver side of each job kind: ship the job now, return the fan-out's body.

Shipping raises a :class:`~dspex.errors.UsageError` before any unit is
queued when the program, the metric or a setting can't be shipped; the
returned :class:`RemoteBody` then starts (or reaches) the Ray crew.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dspex.programs._evaluate_engine import Outcome
from dspex.programs._ray._dispatch import RemoteBody
from dspex.programs._ray._jobs import EvaluateJob, GEPAJob, SIMBAJob, TeacherJob, job_digest
from dspex.programs._ray._shipping import ship, ship_function, ship_settings
from dspex.programs._settings import current_settings

__all__ = ["SIMBABodies", "evaluate_body", "gepa_body", "teacher_body"]


def evaluate_body(program: Any, metric: Callable[..., Any]) -> Callable[[Any], Outcome]:
    """Evaluate's body on the Ray backend (driver): ships now, runs each example remotely."""
    shipped = ship(program)
    scorer = ship_function(metric, "metric")
    settings = ship_settings(current_settings())
    job = EvaluateJob(
        settings=settings,
        digest=job_digest("evaluate", shipped.digest, scorer.path, settings.lm, settings.adapter),
        program=shipped,
        metric=scorer,
    )
    return RemoteBody(job, "evaluate")


def teacher_body(
    teacher: Any,
    *,
    metric: Callable[..., Any] | None,
    metric_threshold: float | None,
    teacher_settings: Mapping[str, Any],
    max_rounds: int,
) -> Callable[[Any], Any]:
    """BootstrapFewShot's teacher runs on the Ray backend (driver): ships now."""
    shipped = ship(teacher)
    scorer = ship_function(metric, "metric") if metric is not None else None
    settings = ship_settings(current_settings())
    extra = ship_settings(teacher_settings, where="teacher_settings")
    job = TeacherJob(
        settings=settings,
        digest=job_digest(
            "teacher",
            shipped.digest,
            scorer.path if scorer is not None else None,
            metric_threshold,
            settings.lm,
            settings.adapter,
            extra.lm,
            extra.adapter,
            max_rounds,
        ),
        teacher=shipped,
        metric=scorer,
        metric_threshold=metric_threshold,
        teacher_settings=extra,
        max_rounds=max_rounds,
    )
    return RemoteBody(job, "bootstrap")


def gepa_body(
    program: Any, metric: Callable[..., Any], *, capture_traces: bool
) -> Callable[[Any], Any]:
    """One GEPA candidate's units on the Ray backend (driver): ships the candidate now.

    Each unit takes ``(group, example)`` and returns the rollout in the
    journal's plain form (``_gepa_adapter.plain_rollout``).
    """
    shipped = ship(program)
    scorer = ship_function(metric, "metric")
    settings = ship_settings(current_settings())
    job = GEPAJob(
        settings=settings,
        digest=job_digest(
            "gepa", shipped.digest, scorer.path, capture_traces, settings.lm, settings.adapter
        ),
        program=shipped,
        metric=scorer,
        capture_traces=capture_traces,
    )
    return RemoteBody(job, "GEPA")


class SIMBABodies:
    """SIMBA's units on the Ray backend (driver): each distinct program ships once.

    SIMBA runs a fresh copy of a program per (rollout LM, example); copies
    with the same state share one job. Called from the compile's thread
    (:meth:`body`) before the pairs go to the pool.
    """

    def __init__(self, metric: Callable[..., Any]) -> None:
        self.metric = ship_function(metric, "metric")
        self.settings = ship_settings(current_settings())
        self._lock = threading.Lock()
        self._bodies: dict[str, RemoteBody] = {}

    def body(self, program: Any) -> Callable[[Any], Any]:
        """The body running ``program`` on one example (ships it unless already shipped)."""
        key = f"{type(program).__module__}:{type(program).__qualname__}\0" + json.dumps(
            program.dump_state(json_mode=True), sort_keys=True, default=repr
        )
        with self._lock:
            found = self._bodies.get(key)
        if found is not None:
            return found
        shipped = ship(program)
        settings = self.settings
        job = SIMBAJob(
            settings=settings,
            digest=job_digest(
                "simba", shipped.digest, self.metric.path, settings.lm, settings.adapter
            ),
            program=shipped,
            metric=self.metric,
        )
        made = RemoteBody(job, "SIMBA")
        with self._lock:
            return self._bodies.setdefault(key, made)
