"""Answer metrics compatible with DSPy's: normalized exact match, passage match, token F1."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "answer_exact_match",
    "answer_passage_match",
    "exact_match",
    "f1_score",
    "normalize_text",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD-style normalization: NFD, lowercase, no punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFD", text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_text(prediction) == normalize_text(reference)


def f1_score(prediction: str, reference: str) -> float:
    """Token-level F1 between the normalized strings (SQuAD's definition)."""
    pred_tokens = normalize_text(prediction).split()
    ref_tokens = normalize_text(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)


def _answers(example: Any) -> list[str]:
    answer = _field(example, "answer")
    if isinstance(answer, str):
        return [answer]
    if isinstance(answer, Iterable):
        return [str(a) for a in answer]
    return [str(answer)]


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    """True when ``pred.answer`` matches one of ``example.answer`` (a str or a list).

    With ``frac < 1`` a token F1 of at least ``frac`` counts as a match.
    """
    if not 0 < frac <= 1:
        from dspex.errors import UsageError

        raise UsageError(f"answer_exact_match(frac={frac}): frac must be in (0, 1]")
    predicted = str(_field(pred, "answer"))
    refs = _answers(example)
    if frac >= 1.0:
        return any(exact_match(predicted, ref) for ref in refs)
    return max(f1_score(predicted, ref) for ref in refs) >= frac


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    """True when one of ``example.answer`` occurs in one of ``pred.context``'s passages."""
    passages = _field(pred, "context")
    if isinstance(passages, str):
        passages = [passages]
    normalized = [normalize_text(str(p)) for p in passages]
    for ref in _answers(example):
        needle = normalize_text(ref)
        if needle and any(needle in passage for passage in normalized):
            return True
    return False
