"""A GPU benchmark run for one batch size or one shape adds to its results file."""

from __future__ import annotations

import json

from bench.report import write_merged


def read(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_run_of_what_was_missing_keeps_the_earlier_rows_of_the_same_gpu(tmp_path) -> None:
    out = tmp_path / "results" / "finetune_gpu-h200.json"
    batch1 = {"batch": 1, "peak_bytes": 5_490_000_000}
    write_merged(out, {"gpu": "NVIDIA H200", "rows": [batch1]}, rows="rows", key="batch", gpu="gpu")
    batch4 = {"batch": 4, "peak_bytes": 7_100_000_000}
    write_merged(out, {"gpu": "NVIDIA H200", "rows": [batch4]}, rows="rows", key="batch", gpu="gpu")
    assert read(out)["rows"] == [{**batch1, "earlier_run": True}, batch4]

    again = {"batch": 1, "peak_bytes": 5_480_000_000}  # measured again: the new row replaces it
    write_merged(out, {"gpu": "NVIDIA H200", "rows": [again]}, rows="rows", key="batch", gpu="gpu")
    assert read(out)["rows"] == [{**batch4, "earlier_run": True}, again]


def test_another_gpus_or_an_unreadable_file_is_replaced(tmp_path) -> None:
    out = tmp_path / "decode_gpu.json"
    first = {"device": "NVIDIA H100", "shapes": [{"shape": "llava-1.5-7b", "paths": {}}]}
    write_merged(out, first, rows="shapes", key="shape", gpu="device")
    second = {"device": "NVIDIA H200", "shapes": [{"shape": "qwen2-vl-7b", "paths": {}}]}
    write_merged(out, second, rows="shapes", key="shape", gpu="device")
    assert read(out) == second
    out.write_text("{ cut short", encoding="utf-8")
    write_merged(out, first, rows="shapes", key="shape", gpu="device")
    assert read(out) == first
