"""Grouped bar charts for the statistics page, laid out for an inline SVG (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str
    colour: str


@dataclass
class Chart:
    """A grouped bar chart, laid out for an inline SVG (the template draws it)."""

    ident: str
    title: str
    desc: str
    width: int
    height: int
    bars: list[Bar]
    groups: list[tuple[str, float]]
    ticks: list[tuple[int, float]]
    legend: list[tuple[str, str, float]]
    left: int
    right: int
    base: float
    slanted: bool


def _step(peak: int) -> int:
    """A round tick step that makes at most five ticks up to ``peak``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if peak <= 5 * step * factor:
                return step * factor
        step *= 10


def bar_chart(
    ident: str, title: str, desc: str, groups: list[tuple[str, Mapping[str, int]]], series: list[tuple[str, str, str]]
) -> Chart:
    """Bars of each series (key, label, colour) side by side per group; the numbers go in a table beside it."""
    char_w, legend_w = 7.0, 120.0  # about, at 12 px
    count = max(len(groups), 1)
    group_w = max(48.0, min(200.0, 900.0 / count))
    longest = max([0, *(len(name) for name, _ in groups)]) * char_w
    slanted = longest > group_w * 0.95  # names that would overlap their neighbours are written at a slant
    reach = longest * 0.87 if slanted else longest / 2  # how far left of its group's centre a name goes
    left = int(max(56.0, reach - group_w * 0.5 + 8))
    right, top, legend_h, plot_h = 16, 16, 28, 200
    bottom = int(longest * 0.5 + 28) if slanted else 40
    width = int(max(left + right + group_w * count, left + legend_w * len(series) + right))
    height = top + legend_h + plot_h + bottom
    base = float(top + legend_h + plot_h)
    peak = max([0, *(values.get(key, 0) for _, values in groups for key, _, _ in series)])
    step = _step(max(peak, 1))
    ceiling = step * max(1, -(-max(peak, 1) // step))
    scale = plot_h / ceiling
    bar_w = (group_w * 0.8) / len(series)
    bars, centres = [], []
    for index, (name, values) in enumerate(groups):
        start = left + index * group_w + group_w * 0.1
        centres.append((name, start + group_w * 0.4))
        for position, (key, label, colour) in enumerate(series):
            value = int(values.get(key, 0))
            h = value * scale
            bars.append(
                Bar(start + position * bar_w, base - h, bar_w - 1, h, value, f"{name}, {label}: {value}", colour)
            )
    ticks = [(value, base - value * scale) for value in range(0, ceiling + 1, step)]
    legend = [(label, colour, left + i * legend_w) for i, (_, label, colour) in enumerate(series)]
    return Chart(ident, title, desc, width, height, bars, centres, ticks, legend, left, width - right, base, slanted)
