"""``majority``: pick the completion whose answer most completions agree on.

Self-consistency in one call: sample several completions (``n=5``), then
vote on one field. Values are compared after normalization (SQuAD-style text
normalization by default); a completion whose value normalizes to None does
not vote, unless none votes at all. Ties go to the value seen first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._metrics import normalize_text
from dspex.programs._prediction import Completions, Prediction

__all__ = ["default_normalize", "majority"]


def default_normalize(value: Any) -> str | None:
    """Normalized text of ``value`` for voting; None (no vote) when it normalizes to ``""``."""
    text = value if isinstance(value, str) else str(value)
    return normalize_text(text) or None


def majority(
    prediction_or_completions: Prediction | Completions | Sequence[Mapping[str, Any]],
    normalize: Callable[[Any], Any] | None = default_normalize,
    field: str | None = None,
) -> Prediction:
    """The completion holding the most common value of ``field``, as a Prediction.

    ``field`` defaults to the signature's last output field (or the last key
    of the first completion when there is no signature). ``normalize=None``
    compares raw values (they must be hashable).
    """
    completions, signature = _completions_of(prediction_or_completions)
    if not completions:
        raise UsageError(
            "majority() needs at least one completion to vote on; call the predictor with "
            "n=... (e.g. dspex.Predict('question -> answer', n=5)) to sample several"
        )
    if not field:
        field = _default_field(signature, completions[0])
    keep: Callable[[Any], Any] = normalize if normalize is not None else _identity

    values = []
    for i, completion in enumerate(completions):
        if field not in completion:
            raise UsageError(
                f"majority(field={field!r}): completion {i} has no field {field!r}; "
                f"its fields are {list(completion.keys())}. Pass field=<one of them>."
            )
        values.append(keep(completion[field]))
    voting = [v for v in values if v is not None] or values
    counts: dict[Any, int] = {}
    for value in voting:
        counts[value] = counts.get(value, 0) + 1
    winner = max(counts, key=counts.__getitem__)  # first-seen value wins a tie
    chosen = completions[values.index(winner)]
    return Prediction.from_completions([dict(chosen.items())], signature=signature)


def _identity(value: Any) -> Any:
    return value


def _completions_of(value: Any) -> tuple[list[Any], Any]:
    """The completions as a list of mappings, and the signature if known."""
    if isinstance(value, Prediction):
        if value.completions is None:  # built by hand: its own fields are the one completion
            return [value], None
        return list(value.completions), value.completions.signature
    if isinstance(value, Completions):
        return list(value), value.signature
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if not hasattr(item, "items") or not hasattr(item, "keys"):
                raise UsageError(
                    f"majority(): item {i} is a {type(item).__name__}; pass Predictions or "
                    "dicts of field -> value"
                )
        return list(value), getattr(value, "signature", None)
    raise UsageError(
        f"majority() takes a Prediction, a Completions or a list of completions, got "
        f"{type(value).__name__}; e.g. majority(dspex.Predict('q -> answer', n=5)(q=...))"
    )


def _default_field(signature: Any, first: Any) -> str:
    outputs = getattr(signature, "output_fields", None)
    if outputs:
        return str(list(outputs)[-1])
    keys = list(first.keys())
    if not keys:
        raise UsageError("majority(): the completions have no fields; pass field=...")
    return str(keys[-1])
