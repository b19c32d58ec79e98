"""A small line plot drawn with QPainter: training and evaluation loss against the step.

QtCharts is not part of PySide6-Essentials; two curves, axes and a legend are all the wizard
needs, and painting them keeps the training page light while points stream in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPaintEvent, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget


@dataclass
class Series:
    name: str
    color: str
    points: list[tuple[float, float]] = field(default_factory=list)
    dots: bool = False  # evaluation points are few: mark each one


class LossPlot(QWidget):
    """``add(series, x, y)`` and it repaints; the x range is fixed to the planned steps."""

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 52, 16, 28, 34

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lossPlot")
        self.setMinimumSize(360, 200)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.series = {
            "train": Series("training loss", "#2563eb"),
            "eval": Series("evaluation loss", "#d97706", dots=True),
        }
        self.x_max = 1.0
        self.empty_text = "The loss curve appears here once training starts."

    def sizeHint(self) -> QSize:
        return QSize(560, 260)

    def clear(self) -> None:
        for series in self.series.values():
            series.points.clear()
        self.update()

    def set_x_max(self, value: float) -> None:
        self.x_max = max(1.0, float(value))
        self.update()

    def add(self, name: str, x: float, y: float) -> None:
        if not math.isfinite(y):
            return
        points = self.series[name].points
        if points and points[-1][0] >= x:  # a replayed point (resume) replaces what followed it
            points[:] = [point for point in points if point[0] < x]
        points.append((float(x), float(y)))
        self.update()

    # --- painting ----------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor("#ffffff"))
        area = QRectF(
            self.MARGIN_LEFT,
            self.MARGIN_TOP,
            max(10, self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT),
            max(10, self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM),
        )
        values = [y for series in self.series.values() for _, y in series.points]
        if not values:
            painter.setPen(QColor("#6b7280"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
            return
        low, high = _nice_range(min(values), max(values))
        self._axes(painter, area, low, high)
        for series in self.series.values():
            self._curve(painter, area, series, low, high)
        self._legend(painter)

    def _map(self, area: QRectF, x: float, y: float, low: float, high: float) -> QPointF:
        px = area.left() + area.width() * (x / self.x_max)
        py = area.bottom() - area.height() * ((y - low) / (high - low))
        return QPointF(px, py)

    def _axes(self, painter: QPainter, area: QRectF, low: float, high: float) -> None:
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1))
        painter.setFont(small)
        grid = QPen(QColor("#e5e7eb"))
        for index in range(5):
            value = low + (high - low) * index / 4
            y = area.bottom() - area.height() * index / 4
            painter.setPen(grid)
            painter.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            painter.setPen(QColor("#6b7280"))
            painter.drawText(
                QRectF(0, y - 8, self.MARGIN_LEFT - 6, 16),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f"{value:.2f}",
            )
        painter.setPen(QPen(QColor("#9ca3af")))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        painter.drawLine(area.bottomLeft(), area.topLeft())
        painter.setPen(QColor("#6b7280"))
        for fraction in (0.0, 0.5, 1.0):
            x = area.left() + area.width() * fraction
            painter.drawText(
                QRectF(x - 30, area.bottom() + 4, 60, 14),
                Qt.AlignmentFlag.AlignHCenter,
                f"{self.x_max * fraction:.0f}",
            )
        painter.drawText(
            QRectF(area.left(), area.bottom() + 17, area.width(), 14),
            Qt.AlignmentFlag.AlignHCenter,
            "training step",
        )

    def _curve(
        self, painter: QPainter, area: QRectF, series: Series, low: float, high: float
    ) -> None:
        if not series.points:
            return
        pen = QPen(QColor(series.color))
        pen.setWidthF(2.0)
        painter.setPen(pen)
        path = QPainterPath()
        for index, (x, y) in enumerate(series.points):
            point = self._map(area, x, y, low, high)
            if index == 0:
                path.moveTo(point)
            else:
                path.lineTo(point)
        painter.drawPath(path)
        if series.dots or len(series.points) == 1:
            painter.setBrush(QColor(series.color))
            for x, y in series.points:
                painter.drawEllipse(self._map(area, x, y, low, high), 3.0, 3.0)
            painter.setBrush(Qt.BrushStyle.NoBrush)

    def _legend(self, painter: QPainter) -> None:
        x = float(self.MARGIN_LEFT)
        for series in self.series.values():
            painter.setPen(QPen(QColor(series.color), 3))
            painter.drawLine(QPointF(x, 14), QPointF(x + 18, 14))
            painter.setPen(QColor("#374151"))
            painter.drawText(QPointF(x + 24, 18), series.name)
            x += 34 + painter.fontMetrics().horizontalAdvance(series.name)


def _nice_range(low: float, high: float) -> tuple[float, float]:
    """A range with a little room around the data, never empty."""
    if math.isclose(low, high):
        return low - 0.5, high + 0.5
    pad = (high - low) * 0.08
    return max(0.0, low - pad) if low >= 0 else low - pad, high + pad
