"""Minimal inline-SVG line charts for the evaluation report (no plotting library, no JavaScript)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"


def _f(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


@dataclass
class Chart:
    """A single x/y panel with axes, grid and any number of series, rendered to an <svg> string."""

    title: str
    x_label: str
    y_label: str
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)
    width: int = 330
    height: int = 310
    x_ticks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    y_ticks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    x_tick_format: str = "{:g}"
    y_tick_format: str = "{:g}"
    subtitle: str = ""
    margin: tuple[int, int, int, int] = (34, 14, 44, 50)  # top, right, bottom, left
    _body: list[str] = field(default_factory=list)
    _legend: list[tuple[str, str, str]] = field(default_factory=list)  # (colour, dash, text)

    # -- geometry
    @property
    def _plot(self) -> tuple[float, float, float, float]:
        top, right, bottom, left = self.margin
        return left, top, self.width - left - right, self.height - top - bottom

    def sx(self, x: float) -> float:
        left, _, w, _ = self._plot
        x0, x1 = self.x_range
        return left + (x - x0) / (x1 - x0) * w

    def sy(self, y: float) -> float:
        _, top, _, h = self._plot
        y0, y1 = self.y_range
        return top + h - (y - y0) / (y1 - y0) * h

    def _runs(self, xs: Sequence[float], ys: Sequence[float]) -> list[str]:
        """Screen-space point lists of the parts of the line inside the data range.

        Clipped here rather than with an SVG clipPath, which some renderers (Qt's SVG Tiny,
        e-mail clients) ignore.
        """
        x0, x1 = sorted(self.x_range)
        y0, y1 = sorted(self.y_range)
        pts = [
            (float(x), float(y))
            for x, y in zip(xs, ys)
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
        ]
        runs: list[list[tuple[float, float]]] = []
        current: list[tuple[float, float]] = []
        if len(pts) == 1 and x0 <= pts[0][0] <= x1 and y0 <= pts[0][1] <= y1:
            current = [pts[0]]
        for (ax, ay), (bx, by) in zip(pts, pts[1:]):
            seg = _clip_segment(ax, ay, bx, by, x0, x1, y0, y1)
            if seg is None:
                if current:
                    runs.append(current)
                    current = []
                continue
            (cx, cy), (dx, dy) = seg
            if not current or current[-1] != (cx, cy):
                if current:
                    runs.append(current)
                current = [(cx, cy)]
            current.append((dx, dy))
        if current:
            runs.append(current)
        return [" ".join(f"{_f(self.sx(x))},{_f(self.sy(y))}" for x, y in run) for run in runs]

    # -- drawing
    def line(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        colour: str,
        width: float = 2.0,
        dash: str = "",
        legend: str | None = None,
        opacity: float = 1.0,
    ) -> None:
        runs = self._runs(xs, ys)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for pts in runs:
            self._body.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="{width}"'
                f' stroke-opacity="{opacity}" stroke-linejoin="round"{dash_attr}/>'
            )
        if legend:
            self._legend.append((colour, dash, legend))

    def marker(self, x: float, y: float, colour: str, label: str | None = None, r: float = 5.0) -> None:
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        if not (min(self.x_range) <= x <= max(self.x_range) and min(self.y_range) <= y <= max(self.y_range)):
            return
        self._body.append(
            f'<circle cx="{_f(self.sx(x))}" cy="{_f(self.sy(y))}" r="{r}" fill="#fff" stroke="{colour}" stroke-width="2.2"/>'
        )
        if label:
            self._legend.append((colour, "marker", label))

    def error_bar(self, x0: float, y0: float, x1: float, y1: float, colour: str) -> None:
        vals = (x0, y0, x1, y1)
        if not all(v is not None and math.isfinite(v) for v in vals):
            return
        self._body.append(
            f'<line x1="{_f(self.sx(x0))}" y1="{_f(self.sy(y0))}" x2="{_f(self.sx(x1))}" y2="{_f(self.sy(y1))}"'
            f' stroke="{colour}" stroke-width="1.4"/>'
        )

    def hline(self, y: float, colour: str = "#888", dash: str = "4 3", legend: str | None = None) -> None:
        self.line([self.x_range[0], self.x_range[1]], [y, y], colour, width=1.2, dash=dash, legend=legend)

    def note(self, text: str) -> None:
        """A line of text in the legend without a swatch."""
        self._legend.append(("", "", text))

    def render(self, legend_corner: str = "lower right") -> str:
        left, top, w, h = self._plot
        out = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}"'
            f' viewBox="0 0 {self.width} {self.height}" role="img" aria-label="{escape(self.title)}"'
            f' style="{FONT}">',
            f"<title>{escape(self.title)}</title>",
            f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fcfcfd" stroke="#c8ccd2"/>',
        ]
        for t in self.x_ticks:
            x = self.sx(t)
            out.append(f'<line x1="{_f(x)}" y1="{top}" x2="{_f(x)}" y2="{top + h}" stroke="#e6e8eb"/>')
            out.append(
                f'<text x="{_f(x)}" y="{top + h + 15}" font-size="11" text-anchor="middle" fill="#444">'
                f"{escape(self.x_tick_format.format(t))}</text>"
            )
        for t in self.y_ticks:
            y = self.sy(t)
            out.append(f'<line x1="{left}" y1="{_f(y)}" x2="{left + w}" y2="{_f(y)}" stroke="#e6e8eb"/>')
            out.append(
                f'<text x="{left - 6}" y="{_f(y + 4)}" font-size="11" text-anchor="end" fill="#444">'
                f"{escape(self.y_tick_format.format(t))}</text>"
            )
        out.append(
            f'<text x="{left + w / 2:.1f}" y="{self.height - 8}" font-size="12" text-anchor="middle" fill="#222">'
            f"{escape(self.x_label)}</text>"
        )
        out.append(
            f'<text transform="translate(14 {top + h / 2:.1f}) rotate(-90)" font-size="12" text-anchor="middle"'
            f' fill="#222">{escape(self.y_label)}</text>'
        )
        out.append(f'<text x="{left}" y="{top - 16}" font-size="14" font-weight="600" fill="#111">{escape(self.title)}</text>')
        if self.subtitle:
            out.append(f'<text x="{left}" y="{top - 4}" font-size="11" fill="#555">{escape(self.subtitle)}</text>')
        out.extend(self._body)
        out.extend(self._render_legend(legend_corner))
        out.append("</svg>")
        return "\n".join(out)

    def _render_legend(self, corner: str) -> list[str]:
        if not self._legend:
            return []
        left, top, w, h = self._plot
        line_h = 15
        box_w = min(w - 8, 8 + max(len(t) for _, _, t in self._legend) * 6.1 + 26)
        box_h = 6 + line_h * len(self._legend)
        if corner == "outside":  # to the right of the plot; the caller leaves room in the margin
            box_w = self.width - (left + w) - 14
            x, y = left + w + 10, float(top)
        else:
            x = left + w - box_w - 4 if "right" in corner else left + 4
            y = top + h - box_h - 4 if "lower" in corner else top + 4
        out = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{box_w:.1f}" height="{box_h}" fill="#fff" fill-opacity="0.92" stroke="#d0d4da" rx="3"/>']
        for i, (colour, dash, text) in enumerate(self._legend):
            cy = y + 3 + line_h * i + line_h / 2
            tx = x + 26
            if dash == "marker":
                out.append(f'<circle cx="{x + 13:.1f}" cy="{cy:.1f}" r="4" fill="#fff" stroke="{colour}" stroke-width="2"/>')
            elif colour:
                d = f' stroke-dasharray="{dash}"' if dash else ""
                out.append(f'<line x1="{x + 5:.1f}" y1="{cy:.1f}" x2="{x + 21:.1f}" y2="{cy:.1f}" stroke="{colour}" stroke-width="2.2"{d}/>')
            else:
                tx = x + 6
            out.append(f'<text x="{tx:.1f}" y="{cy + 4:.1f}" font-size="11" fill="#222">{escape(text)}</text>')
        return out


def _clip_segment(
    ax: float, ay: float, bx: float, by: float, x0: float, x1: float, y0: float, y1: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Liang-Barsky clipping of segment a-b to the box; None when it lies outside."""
    dx, dy = bx - ax, by - ay
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, ax - x0), (dx, x1 - ax), (-dy, ay - y0), (dy, y1 - ay)):
        if p == 0:
            if q < 0:
                return None
            continue
        r = q / p
        if p < 0:
            t0 = max(t0, r)
        else:
            t1 = min(t1, r)
        if t0 > t1:
            return None
    return (ax + t0 * dx, ay + t0 * dy), (ax + t1 * dx, ay + t1 * dy)


def ci_bar(value: float, low: float, high: float, colour: str = "#0072B2", width: int = 170, height: int = 16) -> str:
    """A small horizontal bar (0-100 %) with its confidence interval as a whisker, for tables."""
    if value is None or not math.isfinite(value):
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"></svg>'
    pad = 2
    span = width - 2 * pad

    def sx(v: float) -> float:
        return pad + max(0.0, min(1.0, v)) * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="{value * 100:.0f} percent">',
        f'<rect x="{pad}" y="3" width="{span}" height="{height - 6}" fill="#eef0f3" rx="2"/>',
        f'<rect x="{pad}" y="3" width="{sx(value) - pad:.1f}" height="{height - 6}" fill="{colour}" fill-opacity="0.75" rx="2"/>',
    ]
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        mid = height / 2
        parts.append(f'<line x1="{sx(low):.1f}" y1="{mid}" x2="{sx(high):.1f}" y2="{mid}" stroke="#222" stroke-width="1.3"/>')
        for v in (low, high):
            parts.append(f'<line x1="{sx(v):.1f}" y1="{mid - 4}" x2="{sx(v):.1f}" y2="{mid + 4}" stroke="#222" stroke-width="1.3"/>')
    parts.append("</svg>")
    return "".join(parts)
