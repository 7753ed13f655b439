"""The chart ``memipc bench --plot FILE.png`` draws: latency on the left, throughput on the right.

One figure, two horizontal bar charts, one group of bars per headline measure
(:func:`memipc._bench.compare.headlines`): round trips at p50 in µs, and
rates in messages per second, both on log scales (peers are often tens of
times apart, and a linear axis would flatten every bar but the longest).
memipc's bars are coloured, the peers' grey, and every bar carries its
figure, so the chart reads without the table.

This module needs matplotlib (``pip install 'memipc[plot]'``) and imports
it at once: the command imports this module only for ``--plot``.  It uses
matplotlib's object API, not pyplot, so no GUI backend or global state is
involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .compare import MEMIPC, Cell, Headline

MEMIPC_COLOUR = "#d9480f"
PEER_COLOUR = "#8c99a6"
BAR_HEIGHT_IN = 0.28


def _time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    return f"{ns / 1e3:.3g} µs"


def _rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.3g} M/s"
    return f"{per_s / 1e3:.3g} k/s" if per_s >= 1e3 else f"{per_s:.3g}/s"


def _groups(cells: Sequence[Cell], lines: Sequence[Headline]) -> list[tuple[Headline, list[Cell]]]:
    """Each headline with its cells, memipc's first, then the peers from fastest to slowest."""
    out = []
    for line in lines:
        members = [c for c in cells if (c.suite, c.measure) == (line.suite, line.measure)]
        faster_first = sorted(members, key=lambda c: c.value if c.unit == "ns" else -c.value)
        out.append((line, sorted(faster_first, key=lambda c: c.peer != MEMIPC)))
    return out


def _draw(axes: Axes, groups: list[tuple[Headline, list[Cell]]], latency: bool, rows: int) -> None:
    """Bars top to bottom: a bold heading per group, then one bar per cell, labelled with its figure.

    `rows` is the height of the taller of the two charts, in bars, so that
    bars are equally thick in both.  On a log scale a bar's length depends
    on where the axis starts: it starts a decade below the shortest bar's
    decade, so that the shortest bar is still seen.
    """
    if not groups:
        axes.text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    ticks: list[float] = []
    labels: list[str] = []
    headings: list[int] = []
    position = 0.0
    largest, smallest = 0.0, math.inf
    for line, members in groups:
        headings.append(len(labels))
        ticks.append(position)
        labels.append(line.title)
        position += 1
        for cell in members:
            value = cell.value / 1e3 if latency else cell.value
            largest, smallest = max(largest, value), min(smallest, value)
            colour = MEMIPC_COLOUR if cell.peer == MEMIPC else PEER_COLOUR
            axes.barh(position, value, height=0.7, color=colour)
            text = _time(cell.value) if latency else _rate(cell.value)
            axes.text(value * 1.08, position, text, va="center", fontsize=8)
            ticks.append(position)
            labels.append(cell.row if cell.peer == MEMIPC else f"{cell.row} ({cell.peer})")
            position += 1
        position += 0.6
    axes.set_xscale("log")
    # Room after the longest bar for its figure.
    axes.set_xlim(10 ** (math.floor(math.log10(smallest)) - 1), largest * 8)
    axes.set_ylim(rows + 0.4, -0.6)
    axes.set_yticks(ticks, labels, fontsize=8)
    for index in headings:
        axes.get_yticklabels()[index].set_fontweight("bold")
    axes.tick_params(axis="y", length=0)
    axes.grid(axis="x", which="major", alpha=0.3)
    if latency:
        axes.set_xlabel("round trip, p50 (µs, log scale): shorter is better")
        axes.set_title("Latency")
    else:
        axes.set_xlabel("messages per second (log scale): longer is better")
        axes.set_title("Throughput")


def draw(cells: Sequence[Cell], lines: Sequence[Headline], path: Path, title: str) -> None:
    """Write the figure to `path` (PNG, SVG or PDF, by its suffix)."""
    latency = _groups(cells, [line for line in lines if line.unit == "ns"])
    throughput = _groups(cells, [line for line in lines if line.unit != "ns"])
    rows = max(sum(1.6 + len(members) for _, members in side) for side in (latency, throughput))
    figure = Figure(figsize=(14, 1.8 + BAR_HEIGHT_IN * max(rows, 4)), layout="constrained")
    left, right = figure.subplots(1, 2)
    _draw(left, latency, latency=True, rows=math.ceil(rows))
    _draw(right, throughput, latency=False, rows=math.ceil(rows))
    figure.suptitle(f"{title}\nmemipc in orange, peers in grey; every figure from this one run", fontsize=11)
    figure.savefig(path, dpi=110)
