"""``KNNFewShot``: at each call, bootstrap demos from the training examples nearest the inputs."""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

from dspex.errors import UsageError
from dspex.programs._knn import KNN
from dspex.programs._teleprompt._base import Teleprompter
from dspex.programs._teleprompt._bootstrap import BootstrapFewShot

__all__ = ["KNNFewShot"]


class KNNFewShot(Teleprompter):
    """DSPy's ``KNNFewShot(k, trainset, vectorizer=Embedder(fn), **bootstrap_args)``.

    ``compile(student)`` returns a reset copy of ``student`` whose every call
    finds the ``k`` nearest training examples (:class:`KNN`), runs
    ``BootstrapFewShot(**bootstrap_args)`` on them (its own coordinator, for
    the length of that call) and answers with the program it compiled.
    """

    def __init__(
        self, k: int, trainset: Sequence[Any], vectorizer: Any, **few_shot_bootstrap_args: Any
    ) -> None:
        try:  # bad bootstrap options fail now, not at the first call
            BootstrapFewShot(**few_shot_bootstrap_args)
        except TypeError as exc:
            raise UsageError(
                f"KNNFewShot({', '.join(map(str, few_shot_bootstrap_args))}): {exc}; the extra "
                "keywords go to BootstrapFewShot (metric, max_bootstrapped_demos, ...)"
            ) from None
        self.KNN = KNN(k, trainset, vectorizer=vectorizer)
        self.few_shot_bootstrap_args = few_shot_bootstrap_args

    def compile(self, student: Any, *, teacher: Any = None) -> Any:  # type: ignore[override]
        """A reset copy of ``student`` that bootstraps its demos per call."""
        copy = student.reset_copy()
        knn, args = self.KNN, self.few_shot_bootstrap_args

        # A bound function in the instance (DSPy's way): the copy keeps its class and
        # predictors, and deepcopy rebinds it to the new copy.
        def forward(_self: Any, **kwargs: Any) -> Any:
            nearest = knn(**kwargs)
            compiled = BootstrapFewShot(**args).compile(student, teacher=teacher, trainset=nearest)
            return compiled(**kwargs)

        copy.forward = types.MethodType(forward, copy)
        return copy
