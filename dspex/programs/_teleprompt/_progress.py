"""A compile's progress bar: units of work (candidates, trials, rounds) and the best score."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from dspex.programs._evaluate_progress import progress_enabled

__all__ = ["CompileBar"]


class CompileBar:
    """A tqdm bar over ``total`` units titled ``desc``, showing the best score so far.

    Drawn only when ``enabled`` (default: stderr is a terminal), so logs and
    tests stay clean. Used from the compiling thread only.
    """

    def __init__(
        self, total: int, desc: str, *, enabled: bool | None = None, file: TextIO | None = None
    ) -> None:
        self.best: float | None = None
        self._bar: Any = None
        if not progress_enabled(enabled, file):
            return
        import tqdm

        self._bar = tqdm.tqdm(
            total=total,
            desc=desc,
            file=file if file is not None else sys.stderr,
            dynamic_ncols=True,
        )

    def step(self, score: float | None = None) -> None:
        """Count one finished unit; ``score`` (if any) may raise the best so far."""
        if score is not None and (self.best is None or score > self.best):
            self.best = score
        bar = self._bar
        if bar is not None:
            if self.best is not None:
                bar.set_postfix(best=f"{self.best:.3f}", refresh=False)
            bar.update(1)

    def close(self) -> None:
        """Draw the final state and release the bar (idempotent)."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def __enter__(self) -> CompileBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
