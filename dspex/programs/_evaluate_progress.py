"""The progress bar of Evaluate and ``Module.batch``: tqdm on stderr, with a running score.

Updated only by the thread consuming results. When it is off, no tqdm object
exists at all, so a quiet evaluation pays nothing per example.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress", "progress_enabled"]


def progress_enabled(display_progress: bool | None, file: TextIO | None = None) -> bool:
    """An explicit True/False wins; None (the default) means "if stderr is a terminal"."""
    if display_progress is not None:
        return bool(display_progress)
    stream = file if file is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed or odd stream
        return False


class Progress:
    """A tqdm bar over ``total`` examples; ``scored=True`` shows the running average.

    ``done`` and ``score_sum`` start from what a resumed journal already holds,
    so the bar and its average cover the whole devset. The description reads
    ``Average Metric: 12.00 / 15 (80.0%)`` like DSPy's (sum of scores / count).
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool,
        scored: bool = True,
        done: int = 0,
        score_sum: float = 0.0,
        file: TextIO | None = None,
    ) -> None:
        self.done = done
        self.score_sum = score_sum
        self._total = total
        self._scored = scored
        self._bar: Any = None
        if not enabled:
            return
        import tqdm

        self._bar = tqdm.tqdm(
            total=total,
            initial=done,
            file=file if file is not None else sys.stderr,
            dynamic_ncols=True,
            desc=self._text(),
        )

    def _text(self) -> str:
        if not self._scored:
            return f"Processed {self.done} / {self._total} examples"
        pct = round(100 * self.score_sum / self.done, 1) if self.done else 0.0
        return f"Average Metric: {self.score_sum:.2f} / {self.done} ({pct}%)"

    def add(self, score: float = 0.0) -> None:
        """Count one finished example worth ``score``."""
        self.done += 1
        self.score_sum += score
        bar = self._bar
        if bar is not None:
            # No forced refresh: tqdm redraws at most every `mininterval`.
            bar.set_description_str(self._text(), refresh=False)
            bar.update(1)

    def close(self) -> None:
        """Draw the final state and release the bar (idempotent)."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.set_description_str(self._text(), refresh=False)
            bar.close()
