"""Evaluate's optional outputs: a plain-text results table, and CSV/JSON files.

One row per example: the example's fields, the prediction's fields (a name
in both gets ``example_``/``pred_`` prefixes) and the score under the
metric's name. pandas is not needed.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["display_results", "result_rows", "save_results"]

_CELL_WORDS = 25
_CELL_CHARS = 40


def result_rows(results: Sequence[tuple[Any, Any, Any]], metric_name: str) -> list[dict[str, Any]]:
    """Flatten ``(example, prediction, score)`` triples into dict rows."""
    rows = []
    for example, prediction, score in results:
        ex = _as_dict(example)
        pred = _as_dict(prediction)
        row: dict[str, Any] = {}
        for key, value in ex.items():
            row[f"example_{key}" if key in pred else key] = value
        for key, value in pred.items():
            row[f"pred_{key}" if key in ex else key] = value
        row[metric_name] = score
        rows.append(row)
    return rows


def _as_dict(obj: Any) -> dict[str, Any]:
    to_dict = getattr(obj, "toDict", None)
    if callable(to_dict):
        return dict(to_dict())
    if isinstance(obj, dict):
        return dict(obj)
    return {"prediction": obj}


def display_results(
    results: Sequence[tuple[Any, Any, Any]],
    metric_name: str,
    limit: bool | int,
    file: TextIO | None = None,
) -> None:
    """Print the rows as an aligned text table (the first ``limit`` if it is an int)."""
    out = file if file is not None else sys.stdout
    rows = result_rows(results, metric_name)
    shown = rows if limit is True else rows[: int(limit)]
    columns: list[str] = []
    for row in shown:
        columns.extend(k for k in row if k not in columns)
    cells = [[_cell(row.get(c, "")) for c in columns] for row in shown]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)), file=out)
    if len(rows) > len(shown):
        print(f"... {len(rows) - len(shown)} more rows not displayed ...", file=out)


def _cell(value: Any) -> str:
    text = " ".join(str(value).split()[:_CELL_WORDS])
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 3] + "..."


def save_results(
    results: Sequence[tuple[Any, Any, Any]],
    metric_name: str,
    *,
    csv_path: str | None,
    json_path: str | None,
) -> None:
    """Write the rows to ``csv_path`` and/or ``json_path`` (values JSON cannot hold as str)."""
    if not csv_path and not json_path:
        return
    rows = result_rows(results, metric_name)
    if csv_path:
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, ensure_ascii=False, default=str)
