"""Plots of analysis tables (matplotlib, Agg backend): success heatmaps and bars with intervals."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_success"]


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "-" if v is None else str(v)


def plot_success(groups: Sequence[Mapping[str, Any]], by: Sequence[str], path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write `success_by` output as a PNG: bars with Wilson intervals for one key, a heatmap for two.

    Bars: one per group, height = rate, error bar = [ci_low, ci_high], n above.
    Heatmap: rows = first key, columns = second key, cells annotated "k/n" and the rate;
    missing combinations are blank.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by = list(by)
    if len(by) not in (1, 2):
        raise ValueError(f"a plot takes one key (bars) or two keys (heatmap), got {len(by)}: {', '.join(by) or '(none)'}")
    path = Path(path)
    if len(by) == 1:
        labels = [_label(g[by[0]]) for g in groups]
        rates = np.array([g["rate"] for g in groups], float)
        low = rates - np.array([g["ci_low"] for g in groups], float)
        high = np.array([g["ci_high"] for g in groups], float) - rates
        fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(groups) + 2), 4))
        x = np.arange(len(groups))
        ax.bar(x, rates, color=["#d9a441" if g["small"] else "#4a7bb7" for g in groups])
        ax.errorbar(x, rates, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
        for xi, g in zip(x, groups):
            ax.text(xi, min(1.02, g["ci_high"] + 0.02), f"{g['successes']}/{g['n']}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, labels, rotation=30 if max((len(s) for s in labels), default=0) > 8 else 0, ha="right")
        ax.set_ylim(0, 1.12)
        ax.set_xlabel(by[0])
        ax.set_ylabel("success rate (Wilson 95%)")
    else:
        rows = sorted({_label(g[by[0]]) for g in groups})
        cols = sorted({_label(g[by[1]]) for g in groups})
        grid = np.full((len(rows), len(cols)), np.nan)
        text = [["" for _ in cols] for _ in rows]
        for g in groups:
            i, j = rows.index(_label(g[by[0]])), cols.index(_label(g[by[1]]))
            grid[i, j] = g["rate"]
            text[i][j] = f"{g['successes']}/{g['n']}\n{g['rate']:.0%}"
        fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(cols) + 2), max(3.0, 0.8 * len(rows) + 1.5)))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                if text[i][j]:
                    ax.text(j, i, text[i][j], ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(by[1])
        ax.set_ylabel(by[0])
        fig.colorbar(im, ax=ax, label="success rate")
    ax.set_title(title or f"success by {', '.join(by)}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
