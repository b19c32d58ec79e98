"""Writing a GPU benchmark's JSON so that a run of only what was missing adds to the file.

A device session is short: a benchmark is often run for one shape, one batch size or one path
at a time. Rows of an earlier run on the same GPU that this run did not measure are kept
(marked ``"earlier_run": true``); rows it measured again are replaced; another GPU's file is
replaced. With ``nested``, a row measured again keeps the earlier entries of its ``nested``
table that this run did not measure (the decode bench's paths of one shape).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merged(
    path: Path, report: dict[str, Any], rows: str, key: str, gpu: str, nested: str | None = None
) -> dict[str, Any]:
    """``report`` with its list ``report[rows]`` completed from the file at ``path``, where the
    file's ``report[gpu]`` names the same GPU."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict) or earlier.get(gpu) != report.get(gpu):
        return dict(report)
    before = {row.get(key): row for row in earlier.get(rows, []) if isinstance(row, dict)}
    new = []
    for row in report[rows]:
        old = before.pop(row.get(key), None)
        if nested and isinstance(old, dict) and isinstance(old.get(nested), dict):
            kept = {
                name: {**entry, "earlier_run": True}
                for name, entry in old[nested].items()
                if name not in row[nested]
            }
            earlier_figures = {name: value for name, value in old.items() if name != "earlier_run"}
            row = {**earlier_figures, **row, nested: {**kept, **row[nested]}}
        new.append(row)
    kept_rows = [{**row, "earlier_run": True} for row in before.values()]
    return {**report, rows: kept_rows + new}


def write_merged(
    path: Path, report: dict[str, Any], rows: str, key: str, gpu: str, nested: str | None = None
) -> dict[str, Any]:
    """Write ``report`` merged with the file's earlier rows (``merged``); what was written."""
    result = merged(path, report, rows, key, gpu, nested)
    write(path, result)
    return result


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
