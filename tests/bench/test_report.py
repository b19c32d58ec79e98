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


def test_a_run_of_one_path_keeps_the_other_paths_of_the_same_shape(tmp_path) -> None:
    out = tmp_path / "decode_gpu-h100.json"
    plain = {"ttft_s": 0.09, "decode_tokens_per_s": 14.0}
    graph = {"ttft_s": 0.06, "decode_tokens_per_s": 150.0}
    first = {"shape": "llava-1.5-7b", "weight_bytes": 3_900_000_000,
             "paths": {"plain": plain, "engine_graph": graph}}  # fmt: skip
    write_merged(out, {"device": "H100", "shapes": [first]}, "shapes", "shape", "device", "paths")
    int4 = {"ttft_s": 0.05, "decode_tokens_per_s": 180.0, "weight_bytes": 3_800_000_000}
    again = {"shape": "llava-1.5-7b", "paths": {"torchao_int4": int4, "plain": plain}}
    result = write_merged(
        out, {"device": "H100", "shapes": [again]}, "shapes", "shape", "device", "paths"
    )
    assert result == read(out)
    (shape,) = result["shapes"]
    assert shape["weight_bytes"] == 3_900_000_000  # the earlier run's model figures stay
    assert shape["paths"] == {
        "engine_graph": {**graph, "earlier_run": True},
        "torchao_int4": int4,
        "plain": plain,  # measured again: this run's
    }


def test_a_shape_kept_from_an_earlier_run_and_measured_again_is_this_runs(tmp_path) -> None:
    out = tmp_path / "decode_gpu-h100.json"
    llava = {"shape": "llava-1.5-7b", "paths": {"plain": {"decode_tokens_per_s": 14.0}}}
    qwen = {"shape": "qwen2-vl-7b", "paths": {"plain": {"decode_tokens_per_s": 12.0}}}
    for shape in (llava, qwen):  # llava is now an earlier run's row
        write_merged(
            out, {"device": "H100", "shapes": [shape]}, "shapes", "shape", "device", "paths"
        )
    again = {"shape": "llava-1.5-7b", "paths": {"engine_graph": {"decode_tokens_per_s": 150.0}}}
    result = write_merged(
        out, {"device": "H100", "shapes": [again]}, "shapes", "shape", "device", "paths"
    )
    assert [shape.get("earlier_run", False) for shape in result["shapes"]] == [True, False]
    assert result["shapes"][1]["paths"]["plain"]["earlier_run"] is True
