"""A chart's extracted series drawn again beside the original, so a person sees if they match."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import Unsupported

if TYPE_CHECKING:
    from PIL import Image


def has_series(data: Any) -> bool:
    """Whether ``data`` looks like the chart schema's answer (series with points)."""
    series = data.get("series") if isinstance(data, dict) else None
    return isinstance(series, list) and any(
        isinstance(s, dict) and isinstance(s.get("points"), list) and s["points"] for s in series
    )


def _points(series: dict[str, Any]) -> tuple[list[Any], list[float]]:
    xs, ys = [], []
    for point in series.get("points") or []:
        if not isinstance(point, dict):
            continue
        y = point.get("y")
        if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y):
            xs.append(point.get("x"))
            ys.append(float(y))
    return xs, ys


def _label(axis: Any) -> str:
    if not isinstance(axis, dict):
        return ""
    label, unit = axis.get("label") or "", axis.get("unit") or ""
    return f"{label} ({unit})" if label and unit else label or unit


def render_replot(page: Image.Image, data: dict[str, Any], out_path: Path) -> Path:
    """Write a PNG with the original page on the left and the re-plotted series on the right."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display, no GUI toolkit: the engine never touches Qt
        from matplotlib import pyplot as plt
    except ImportError as exc:
        raise Unsupported("Re-plotting charts needs matplotlib, which is not installed.") from exc
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), dpi=100)
    try:
        left.imshow(page)
        left.set_title("Original")
        left.axis("off")
        _draw(right, data)
        right.set_title(f"Extracted: {data.get('title') or 'untitled'}")
        figure.tight_layout()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out_path, format="png")
    finally:
        plt.close(figure)
    return out_path


def _draw(axes: Any, data: dict[str, Any]) -> None:
    kind = str(data.get("chart_type") or data.get("type") or "bar")
    series = [s for s in data.get("series") or [] if isinstance(s, dict)]
    if kind == "pie" and series:
        xs, ys = _points(series[0])
        values = [max(0.0, y) for y in ys]
        if sum(values) > 0:
            axes.pie(values, labels=[str(x) for x in xs], autopct="%1.1f%%")
        axes.axis("equal")
        return
    categories: list[str] = []
    for entry in series:  # one shared category axis, in order of first appearance
        for x in _points(entry)[0]:
            if isinstance(x, str) and x not in categories:
                categories.append(x)
    width = 0.8 / max(1, len(series))
    for index, entry in enumerate(series):
        xs, ys = _points(entry)
        if not ys:
            continue
        positions = [
            categories.index(x) if isinstance(x, str) else float(x) if x is not None else i
            for i, x in enumerate(xs)
        ]
        name = entry.get("name") or f"series {index + 1}"
        if kind in ("bar", "horizontal_bar"):
            shifted = [p + (index - (len(series) - 1) / 2) * width for p in positions]
            draw = axes.barh if kind == "horizontal_bar" else axes.bar
            draw(shifted, ys, width, label=name)
        elif kind == "scatter":
            axes.scatter(positions, ys, label=name)
        elif kind == "area":
            axes.fill_between(positions, ys, alpha=0.4, label=name)
        else:
            axes.plot(positions, ys, marker="o", label=name)
    if categories:
        ticks = axes.set_yticks if kind == "horizontal_bar" else axes.set_xticks
        ticks(range(len(categories)), categories, rotation=0 if kind == "horizontal_bar" else 45)
    x_axis, y_axis = data.get("x_axis"), data.get("y_axis")
    if kind == "horizontal_bar":
        x_axis, y_axis = y_axis, x_axis
    axes.set_xlabel(_label(x_axis))
    axes.set_ylabel(_label(y_axis))
    if isinstance(y_axis, dict) and y_axis.get("scale") == "log" and kind != "horizontal_bar":
        axes.set_yscale("log")
    if len(series) > 1:
        axes.legend()
    axes.grid(alpha=0.3)
