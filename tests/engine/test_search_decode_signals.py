"""The image decoder processes ignore Ctrl-C: the engine cancels them itself, and a SIGINT that
reaches one (a terminal's, say) must not break the pool into an internal error."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from engine.search.decode import FileTask, WorkerConfig
from engine.search.pipeline import DecodePool


def test_a_sigint_to_a_decoder_leaves_it_working(
    tiny_model: Callable[[str], Path], tmp_path: Path
) -> None:
    from PIL import Image

    picture = tmp_path / "red.png"
    Image.new("RGB", (48, 32), (200, 30, 30)).save(picture)
    config = WorkerConfig(
        processor_path=str(tiny_model("clip")), draft_side=64, thumb_side=64, pdf_side=128
    )
    with DecodePool(config, workers=1) as pool:
        assert pool._executor is not None
        (worker,) = pool._executor._processes  # type: ignore[attr-defined]
        os.kill(worker, signal.SIGINT)
        time.sleep(0.5)  # let the signal land before any work is handed out
        pool.add(FileTask(path=str(picture), kind="image"))
        results = []
        deadline = time.monotonic() + 120
        while not results and time.monotonic() < deadline:
            results = pool.take(timeout=5)
        assert [r.error for r in results] == [""]
        assert results[0].thumbnail  # decoded, not merely answered
        assert psutil.Process(worker).status() != psutil.STATUS_ZOMBIE  # the same worker did it
