"""Inline SVG charts for the overview, rendered on the server (the page needs
no script to show them); `static/ui.js` redraws them with the same geometry
from the JSON API's timeline. The geometry lives in the SVG's data attributes
so the two draw alike."""

from __future__ import annotations

from html import escape
from typing import Sequence

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 560, 150, 56, 22, 8
HIST_WIDTH, BINS = 220, 16


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value % 1 else f"{value:.0f}"


def _clean(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def timeline_svg(metric: str, label: str, unit: str, values: Sequence[float | None]) -> str:
    """Values over the last batches (oldest left), with the axis bounds and the mean."""
    ys = [0.0 if v is None else float(v) for v in values]
    top = max(ys, default=0.0) or 1.0
    plot_w, plot_h = WIDTH - PAD_LEFT, HEIGHT - PAD_BOTTOM - PAD_TOP
    n = len(ys)
    points = " ".join(
        f"{PAD_LEFT + (i * plot_w / (n - 1) if n > 1 else plot_w / 2):.1f},"
        f"{PAD_TOP + plot_h - y / top * plot_h:.1f}" for i, y in enumerate(ys))
    clean = _clean(values)
    mean = sum(clean) / len(clean) if clean else 0.0
    mean_y = PAD_TOP + plot_h - mean / top * plot_h
    return (
        f'<svg class="chart timeline" id="timeline-{metric}" data-metric="{metric}" data-unit="{escape(unit)}" '
        f'data-w="{WIDTH}" data-h="{HEIGHT}" data-left="{PAD_LEFT}" data-bottom="{PAD_BOTTOM}" data-top="{PAD_TOP}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{escape(label)} over the last {n} batches">'
        f'<rect x="{PAD_LEFT}" y="{PAD_TOP}" width="{plot_w}" height="{plot_h}" class="plot"/>'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 10}" class="axis ymax" text-anchor="end">{_fmt(top)}</text>'
        f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" class="axis" text-anchor="end">0</text>'
        f'<text x="{PAD_LEFT}" y="{HEIGHT - 6}" class="axis count">{n} batches</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 6}" class="axis mean" text-anchor="end">avg {_fmt(mean)} {escape(unit)}</text>'
        f'<line x1="{PAD_LEFT}" x2="{WIDTH}" y1="{mean_y:.1f}" y2="{mean_y:.1f}" class="meanline"/>'
        f'<polyline points="{points}" class="line"/>'
        "</svg>")


def histogram_svg(metric: str, label: str, unit: str, values: Sequence[float | None]) -> str:
    """How often each value range occurred (BINS equal bins from 0 to the maximum)."""
    counts = histogram_counts(_clean(values))
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    most = max(counts) or 1
    bar_w = HIST_WIDTH / BINS
    bars = "".join(
        f'<rect class="bar" x="{i * bar_w:.1f}" width="{bar_w - 1:.1f}" '
        f'y="{PAD_TOP + plot_h - c / most * plot_h:.1f}" height="{c / most * plot_h:.1f}"/>'
        for i, c in enumerate(counts))
    top = max(_clean(values), default=0.0)
    return (
        f'<svg class="chart histogram" id="histogram-{metric}" data-metric="{metric}" data-bins="{BINS}" '
        f'data-w="{HIST_WIDTH}" data-h="{HEIGHT}" data-bottom="{PAD_BOTTOM}" data-top="{PAD_TOP}" '
        f'viewBox="0 0 {HIST_WIDTH} {HEIGHT}" width="{HIST_WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="histogram of {escape(label)}">'
        f'<g class="bars">{bars}</g>'
        f'<text x="0" y="{HEIGHT - 6}" class="axis">0</text>'
        f'<text x="{HIST_WIDTH}" y="{HEIGHT - 6}" class="axis hmax" text-anchor="end">{_fmt(top)} {escape(unit)}</text>'
        "</svg>")


def histogram_counts(values: Sequence[float]) -> list[int]:
    counts = [0] * BINS
    top = max(values, default=0.0)
    for v in values:
        i = BINS - 1 if top <= 0 else min(BINS - 1, int(v / top * BINS))
        counts[i] += 1
    return counts
