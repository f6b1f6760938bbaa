"""The report's figures: error curves per group and heatmaps of the learned soft targets."""
from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path

import numpy as np

from ..results import atomic_write
from .groups import Group
from .paper import PAPER
from .. import modes as table
from .records import mode_label, mode_order

OTHER_COLORS = ("tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")  # modes not in the table
PANEL_INCHES = (6.0, 4.0)
PANELS_PER_ROW = 3
HEATMAP_INCHES = (8.0, 7.0)
DPI = 100
REPORT_MARK = "labelemb-report"  # in every figure's PNG metadata: how the report knows a figure of its own


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": REPORT_MARK})
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """The mean test error at the epochs every run has."""
    maps = [{round(e, 6): v for e, v in c} for c in curves if c]
    if not maps:
        return [], []
    common = sorted(set.intersection(*(set(m) for m in maps)))
    return common, [float(np.mean([m[e] for m in maps])) for e in common]


def plot_curves(groups: list[Group], path: Path, only: tuple[str, ...] | None = None) -> None:
    """One panel per group: runs light and thin, the mean per mode deep and thick; ``only``: just
    these modes (the paper's figure: baseline and LabelEmb)."""
    plt = _pyplot()
    n = len(groups)
    cols = min(n, PANELS_PER_ROW)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows), dpi=DPI,
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, g in zip(axes.flat, groups):
        others = iter(OTHER_COLORS * 3)
        tops, lows = [], []
        for mode in mode_order(m for m in g.by_mode if only is None or m in only):
            color = table.MODES[mode].color if mode in table.MODES else next(others)
            runs = sorted(g.by_mode[mode], key=lambda r: r.num)
            for r in runs:
                if r.curve:
                    ax.plot(*zip(*r.curve), color=color, alpha=0.3, linewidth=0.7)
                    lows.append(min(v for _, v in r.curve))
            xs, ys = mean_curve([r.curve for r in runs])
            if xs:
                ax.plot(xs, ys, color=color, linewidth=2.2,
                        label=f"{mode_label(mode)} (mean of {len(runs)})")
                tops += [y for x, y in zip(xs, ys) if x >= 0.1 * xs[-1]]
        if tops and lows:  # zoom past the first tenth of training, as the paper's figures do
            lo, hi = min(lows), max(tops)
            pad = 0.08 * (hi - lo) or 0.5
            ax.set_ylim(max(lo - pad, 0.0), hi + pad)
        ax.set_title(g.title + (f"  [paper: {PAPER[g.key][0]}]" if g.key in PAPER else ""), fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    _save(fig, path)


def plot_heatmap(g: Group, path: Path) -> None:
    """softmax(E) of the group (rows/columns: the chosen classes), grey scale 0..1 with a colorbar."""
    plt = _pyplot()
    idx = g.heatmap_idx
    names = [g.classes[i] for i in idx]
    m = g.heatmap[np.ix_(idx, idx)]
    fig, ax = plt.subplots(figsize=HEATMAP_INCHES, dpi=DPI)
    im = ax.imshow(m, cmap="Greys", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="soft-target mass")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("soft target for class")
    ax.set_ylabel("label")
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 else "black")
    ax.set_title(f"softmax(E), {g.task} on {g.dataset}\n{g.heatmap_what}; {g.heatmap_note}", fontsize=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig.tight_layout()
    _save(fig, path)


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", s).strip("-") or "x"
