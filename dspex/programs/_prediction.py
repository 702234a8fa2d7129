"""``Prediction`` (a module's output) and ``Completions`` (all n alternatives).

A Prediction is an :class:`Example` whose fields are the first completion; its
``completions`` hold every alternative field by field. A Prediction with a
``score`` field behaves as that number (``float()``, ``+``, ``/``, ordering),
as in DSPy, so metrics may return Predictions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dspex.programs._example import Example

__all__ = ["Completions", "Prediction"]


class Prediction(Example):
    """The output of a module: fields of the first completion, plus all completions."""

    _completions: Completions | None
    _lm_usage: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "_completions", None)
        object.__setattr__(self, "_lm_usage", None)

    @classmethod
    def from_completions(
        cls,
        list_or_dict: Sequence[Mapping[str, Any]] | Mapping[str, list[Any]] | Completions,
        signature: Any = None,
    ) -> Prediction:
        """Build a Prediction from per-completion dicts (or per-field lists)."""
        completions = (
            list_or_dict
            if isinstance(list_or_dict, Completions)
            else Completions(list_or_dict, signature=signature)
        )
        store = {k: v[0] for k, v in completions._data.items()}
        if cls is not Prediction:  # a subclass's __init__ may set more
            obj = cls()
            object.__setattr__(obj, "_completions", completions)
            object.__setattr__(obj, "_store", store)
            return obj
        # What cls() then the two assignments above leave, set at once (every Predict
        # call builds one).
        obj = object.__new__(cls)
        obj.__dict__.update(
            _demos=[], _input_keys=None, _store=store, _completions=completions, _lm_usage=None
        )
        return obj

    @property
    def completions(self) -> Completions | None:
        """Every completion the LM returned, field by field (``None`` if built by hand)."""
        return self._completions

    def get_lm_usage(self) -> Any:
        """Token usage recorded for the call that produced this prediction."""
        return self._lm_usage

    def set_lm_usage(self, value: Any) -> None:
        object.__setattr__(self, "_lm_usage", value)

    def __repr__(self) -> str:
        body = ",\n    ".join(f"{k}={v!r}" for k, v in self._store.items())
        n = len(self._completions) if self._completions is not None else 1
        if n <= 1:
            return f"Prediction(\n    {body}\n)"
        return (
            f"Prediction(\n    {body},\n    completions=Completions(...)\n) "
            f"({n - 1} completions omitted)"
        )

    __str__ = __repr__

    # -- numeric behaviour through the `score` field ---------------------------------

    def __float__(self) -> float:
        if "score" not in self._store:
            raise ValueError(
                "this Prediction has no 'score' field, so it cannot be used as a number; "
                "return a float from the metric or add score=... to the Prediction"
            )
        return float(self._store["score"])

    def _other(self, other: Any, op: str) -> float:
        if isinstance(other, Prediction):
            return float(other)
        if isinstance(other, int | float):
            return float(other)
        raise TypeError(f"unsupported operand type for {op}: Prediction and {type(other).__name__}")

    def __add__(self, other: Any) -> float:
        return float(self) + self._other(other, "+")

    def __radd__(self, other: Any) -> float:
        return self._other(other, "+") + float(self)

    def __truediv__(self, other: Any) -> float:
        return float(self) / self._other(other, "/")

    def __rtruediv__(self, other: Any) -> float:
        return self._other(other, "/") / float(self)

    def __lt__(self, other: Any) -> bool:
        return float(self) < self._other(other, "<")

    def __le__(self, other: Any) -> bool:
        return float(self) <= self._other(other, "<=")

    def __gt__(self, other: Any) -> bool:
        return float(self) > self._other(other, ">")

    def __ge__(self, other: Any) -> bool:
        return float(self) >= self._other(other, ">=")

    # Equality stays Example's (compare fields), so hashing stays consistent.
    __hash__ = Example.__hash__


class Completions:
    """All completions of one call: ``c.answer`` / ``c["answer"]`` is the list of
    answers, ``c[i]`` is completion ``i`` as a Prediction."""

    def __init__(
        self,
        list_or_dict: Sequence[Mapping[str, Any]] | Mapping[str, list[Any]],
        signature: Any = None,
    ) -> None:
        self.signature = signature
        data: dict[str, list[Any]]
        if isinstance(list_or_dict, Mapping):
            data = {k: list(v) for k, v in list_or_dict.items()}
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise ValueError(
                    "Completions(dict) needs one list per field, all of the same length; "
                    f"got lengths { {k: len(v) for k, v in data.items()} }"
                )
        else:
            data = {}
            count = 0
            for completion in list_or_dict:
                count += 1
                for k, v in completion.items():
                    values = data.get(k)
                    if values is None:
                        data[k] = [v]
                    else:
                        values.append(v)
            if any(len(v) != count for v in data.values()):
                raise ValueError(
                    "every completion must have the same fields; got per-field counts "
                    f"{ {k: len(v) for k, v in data.items()} } over {count} completions"
                )
        self._data = data

    def items(self) -> Any:
        """``(field, list of values)`` pairs."""
        return self._data.items()

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            n = len(self)
            if key < -n or key >= n:
                raise IndexError(f"completion index {key} out of range ({n} completions)")
            return Prediction(**{k: v[key] for k, v in self._data.items()})
        return self._data[key]

    def __getattr__(self, name: str) -> list[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        data = self.__dict__.get("_data", {})
        if name in data:
            return data[name]  # type: ignore[no-any-return]
        raise AttributeError(f"'Completions' object has no attribute '{name}'")

    def __len__(self) -> int:
        for values in self._data.values():
            return len(values)
        return 0

    def __iter__(self) -> Iterator[Prediction]:
        for i in range(len(self)):
            yield self[i]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Completions) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = ",\n    ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"Completions(\n    {body}\n)"

    __str__ = __repr__
