"""The driver side of each job kind: ship the job now, return the fan-out's body.

Shipping raises a :class:`~dspex.errors.UsageError` before any unit is
queued when the program, the metric or a setting can't be shipped; the
returned :class:`RemoteBody` then starts (or reaches) the Ray crew.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from dspex.programs._evaluate_engine import Outcome
from dspex.programs._ray._dispatch import RemoteBody
from dspex.programs._ray._jobs import EvaluateJob, TeacherJob, job_digest
from dspex.programs._ray._shipping import ship, ship_function, ship_settings
from dspex.programs._settings import current_settings

__all__ = ["evaluate_body", "teacher_body"]


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
