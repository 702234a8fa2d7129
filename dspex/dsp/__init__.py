"""DSPy's ``dspy.dsp`` paths: ``from dspex.dsp.colbertv2 import ColBERTv2`` and
``from dspex.dsp.utils import dotdict``. Re-exports only; they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dspex._lazy import lazy_face

if TYPE_CHECKING:
    from dspex.dsp import colbertv2, utils
    from dspex.programs._colbertv2 import ColBERTv2, dotdict

_LAZY: dict[str, str] = {
    "ColBERTv2": "dspex.programs._colbertv2",
    "colbertv2": "dspex.dsp.colbertv2",
    "dotdict": "dspex.programs._colbertv2",
    "utils": "dspex.dsp.utils",
}

__all__ = ["ColBERTv2", "colbertv2", "dotdict", "utils"]

__getattr__, __dir__ = lazy_face(__name__, globals(), _LAZY)
