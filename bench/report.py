"""Writing a GPU benchmark's JSON so that a run of only what was missing adds to the file.

A device session is short: a benchmark is often run for one shape or one batch size at a time.
Rows of an earlier run on the same GPU that this run did not measure are kept (marked
``"earlier_run": true``); rows it measured again are replaced; another GPU's file is replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_merged(path: Path, report: dict[str, Any], rows: str, key: str, gpu: str) -> None:
    """Write ``report`` to ``path``, its list ``report[rows]`` completed by earlier rows whose
    ``key`` it lacks, where the file's ``report[gpu]`` names the same GPU."""
    merged = dict(report)
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if isinstance(earlier, dict) and earlier.get(gpu) == report.get(gpu):
        measured = {row.get(key) for row in report[rows]}
        kept = [
            {**row, "earlier_run": True}
            for row in earlier.get(rows, [])
            if isinstance(row, dict) and row.get(key) not in measured
        ]
        merged[rows] = kept + list(report[rows])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
