"""Charts drawn with matplotlib from known series: bar, horizontal bar, line, pie, scatter, area;
linear and log scales, values from units to millions."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

CHART_TYPES = ("bar", "line", "pie", "horizontal_bar", "scatter", "area")
MAGNITUDES = (1, 10, 100, 1_000, 100_000, 1_000_000)
CATEGORIES = (
    ["Q1", "Q2", "Q3", "Q4"],
    ["North", "South", "East", "West", "Central"],
    ["2019", "2020", "2021", "2022", "2023", "2024"],
    ["Apples", "Pears", "Plums"],
)
SUBJECTS = (("Revenue", "USD"), ("Visitors", None), ("Output", "t"), ("Share", "%"))
SERIES_NAMES = ("2023", "2024", "Plan", "Actual")


def make_chart(rng: random.Random, stem: Path, index: int) -> tuple[Path, dict[str, Any], dict]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chart_type = CHART_TYPES[index % len(CHART_TYPES)]
    magnitude = rng.choice(MAGNITUDES)
    log_scale = chart_type == "line" and magnitude >= 1_000 and rng.random() < 0.5
    subject, unit = rng.choice(SUBJECTS)
    categories = list(rng.choice(CATEGORIES))
    n_series = 1 if chart_type in ("pie", "scatter") else rng.choice((1, 2))
    names = rng.sample(SERIES_NAMES, n_series)
    series = []
    for name in names:
        if chart_type == "pie":
            shares = [rng.randint(5, 40) for _ in categories]
            total = sum(shares)
            values = [round(100 * s / total, 1) for s in shares]
            values[-1] = round(100 - sum(values[:-1]), 1)
            xs: list[Any] = categories
        elif chart_type == "scatter":
            xs = sorted(round(rng.uniform(0, 10), 1) for _ in range(6))
            values = [_value(rng, magnitude, log_scale) for _ in xs]
        else:
            xs = categories
            values = [_value(rng, magnitude, log_scale) for _ in xs]
        series.append({"name": name if n_series > 1 else None, "points": [
            {"x": x, "y": y} for x, y in zip(xs, values, strict=True)
        ]})  # fmt: skip
    title = f"{subject} by {('year' if categories[0].isdigit() else 'group')}"
    y_label = f"{subject} ({unit})" if unit else subject
    labelled = rng.random() < 0.6  # values printed on the chart, or only readable off the axes
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    _draw(axes, chart_type, series, log_scale, labelled)
    axes.set_title(title)
    if chart_type != "pie":
        if chart_type == "horizontal_bar":
            axes.set_xlabel(y_label)
        else:
            axes.set_ylabel(y_label)
    if n_series > 1:
        axes.legend()
    figure.tight_layout()
    path = stem.with_suffix(".pdf")
    figure.savefig(path, format="pdf", metadata={"CreationDate": None, "Creator": None})
    plt.close(figure)
    value_axis = {
        "label": y_label,
        "unit": unit,
        "scale": "log" if log_scale else "linear",
        "min": None,
        "max": None,
    }
    category_axis = {
        "label": None,
        "unit": None,
        "scale": "linear" if chart_type == "scatter" else "category",
        "min": None,
        "max": None,
    }
    horizontal = chart_type == "horizontal_bar"
    truth = {
        "chart_type": chart_type,
        "title": title,
        "x_axis": value_axis if horizontal else category_axis,
        "y_axis": category_axis if horizontal else value_axis,
        "series": series,
    }
    if chart_type == "pie":
        truth["x_axis"] = truth["y_axis"] = {
            "label": None, "unit": None, "scale": None, "min": None, "max": None
        }  # fmt: skip
    variant = {
        "chart_type": chart_type,
        "magnitude": magnitude,
        "log": log_scale,
        "labelled": labelled,
    }
    return path, truth, variant


def _value(rng: random.Random, magnitude: int, log_scale: bool) -> float:
    if log_scale:
        return float(round(magnitude * 10 ** rng.uniform(-1, 1.5)))
    value = rng.uniform(1, 10) * magnitude
    return round(value, 1) if magnitude < 100 else float(round(value))


def _draw(
    axes: Any, chart_type: str, series: list[dict[str, Any]], log_scale: bool, labelled: bool
) -> None:
    count = len(series)
    for position, entry in enumerate(series):
        xs = [p["x"] for p in entry["points"]]
        ys = [p["y"] for p in entry["points"]]
        label = entry["name"]
        if chart_type == "pie":
            axes.pie(ys, labels=xs, autopct="%1.1f%%", startangle=90, counterclock=False)
            axes.axis("equal")
        elif chart_type in ("bar", "horizontal_bar"):
            width = 0.8 / count
            offsets = [i + (position - (count - 1) / 2) * width for i in range(len(xs))]
            draw = axes.bar if chart_type == "bar" else axes.barh
            bars = draw(offsets, ys, width, label=label)
            if labelled:
                axes.bar_label(bars, fmt="%g", fontsize=7)
            (axes.set_xticks if chart_type == "bar" else axes.set_yticks)(range(len(xs)), xs)
        elif chart_type == "scatter":
            axes.scatter(xs, ys, label=label)
            for x, y in zip(xs, ys, strict=True) if labelled else ():
                axes.annotate(
                    f"{y:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        else:
            axes.plot(xs, ys, marker="o", label=label)
            if chart_type == "area":
                axes.fill_between(range(len(xs)), ys, alpha=0.25)
            for x, y in zip(xs, ys, strict=True) if labelled else ():
                axes.annotate(
                    f"{y:g}", (x, y), fontsize=7, xytext=(0, 5), textcoords="offset points",
                    ha="center",
                )  # fmt: skip
    if log_scale:
        axes.set_yscale("log")
