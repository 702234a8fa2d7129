"""DSPy's ``dspy.predict.predict`` path: ``Predict``, ``serialize_object`` and its logger.

``logger`` is the logger ``Predict`` warns on (missing or extra inputs).
"""

from typing import Any

from dspex.programs._predict import Predict, logger

__all__ = ["Predict", "logger", "serialize_object"]


def serialize_object(obj: Any) -> Any:
    """``obj`` in JSON-ready form: pydantic models dumped in JSON mode, containers walked.

    Tuples stay tuples, as in DSPy; anything else is returned unchanged.
    """
    dump = getattr(obj, "model_dump", None)
    if callable(dump) and not isinstance(obj, type):
        return dump(mode="json")
    if isinstance(obj, list):
        return [serialize_object(item) for item in obj]
    if isinstance(obj, tuple):
        return tuple(serialize_object(item) for item in obj)
    if isinstance(obj, dict):
        return {key: serialize_object(value) for key, value in obj.items()}
    return obj
