"""Figures (matplotlib, Agg backend): success bars and heatmaps of analysis tables (`success --plot`), and the
report's figures as base64 PNG (success and coverage heatmaps per cell, the paired comparison, loss curves)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from roboloop.report.values import CELL, as_number, percent

__all__ = [
    "comparison_plot",
    "coverage_text",
    "heatmap",
    "loss_figure",
    "loss_plot",
    "plot_success",
    "png_base64",
    "success_text",
]


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


# --- the report's figures, embedded as base64 PNG ------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def png_base64(fig) -> str:
    """The figure as a base64 PNG (no software tag: the same figure gives the same bytes); closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _parse_key(key: str) -> dict[str, str]:
    out = {}
    for part in str(key).split(","):
        a, sep, v = part.partition("=")
        if sep:
            out[a] = v
    return out


def _grid_layout(keys: Sequence[str]) -> tuple[list[str], list[str], dict[str, tuple[int, int]], str, str]:
    """Rows = the axis with the most labels, columns = the other axes combined."""
    conds = {k: _parse_key(k) for k in keys}
    axes = sorted({a for c in conds.values() for a in c})
    if not axes:
        return ["all"], list(keys), {k: (0, i) for i, k in enumerate(keys)}, "", "cell"
    nlab = {a: len({c.get(a) for c in conds.values()}) for a in axes}
    row_axis = max(axes, key=lambda a: (nlab[a], a))
    rest = [a for a in axes if a != row_axis]
    row_of = {k: c.get(row_axis, "") for k, c in conds.items()}
    col_of = {k: ",".join(f"{a}={c.get(a, '')}" for a in rest) or "-" for k, c in conds.items()}
    rows = sorted(set(row_of.values()))
    cols = sorted(set(col_of.values()))
    pos = {k: (rows.index(row_of[k]), cols.index(col_of[k])) for k in keys}
    return rows, cols, pos, row_axis, ",".join(rest)


def heatmap(cells: Sequence[Mapping[str, Any]], value: str, text, title: str, cmap: str = "RdYlGn") -> str:
    """Per-cell values (column `value`, in [0, 1]) on the grid of their condition labels, each cell annotated
    with `text(cell)`; rows = the axis with the most labels. A base64 PNG."""
    plt = _pyplot()
    keys = [c[CELL] for c in cells]
    rows, cols, pos, row_axis, col_axes = _grid_layout(keys)
    grid = np.full((len(rows), len(cols)), np.nan)
    for c in cells:
        r, k = pos[c[CELL]]
        v = c.get(value)
        grid[r, k] = float(v) if v is not None else np.nan
    fig, ax = plt.subplots(figsize=(1.2 + 2.1 * len(cols), 0.9 + 0.85 * len(rows)))
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    colormap = plt.get_cmap(cmap)
    for c in cells:
        r, k = pos[c[CELL]]
        v = grid[r, k]
        red, green, blue, _ = colormap(float(v)) if np.isfinite(v) else (1.0, 1.0, 1.0, 1.0)
        dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.45  # white text on dark colours
        ax.text(k, r, text(c), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if col_axes:
        ax.set_xticks(range(len(cols)), [col.replace(",", "\n") for col in cols], fontsize=8)
    else:
        ax.set_xticks([])
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_ylabel(row_axis)
    if col_axes:
        ax.set_xlabel(col_axes)
    ax.set_title(title, fontsize=10)
    return png_base64(fig)


def success_text(c: Mapping[str, Any]) -> str:
    """A success cell's annotation: k/n, rate, Wilson interval."""
    return f"{c.get('successes', '?')}/{c.get('n', '?')}\n{percent(c.get('rate'))}\n[{percent(c.get('ci_low'))}, {percent(c.get('ci_high'))}]"


def coverage_text(c: Mapping[str, Any]) -> str:
    """A coverage cell's annotation: rollouts covered, training demonstrations near, verdict."""
    return f"covered {c.get('covered', '?')}/{c.get('n', '?')}\nnear {c.get('train_near', '?')} demos\n{c.get('verdict', '')}"


def comparison_plot(rows: Sequence[Mapping[str, Any]], labels: tuple[str, str]) -> str | None:
    """The paired differences per cell with their intervals (a base64 PNG), None when no row has one."""
    pts = [r for r in rows if as_number(r.get("diff")) is not None]
    if not pts:
        return None
    plt = _pyplot()
    colors = {"improved": "#1a9850", "regressed": "#d73027"}
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.38 * len(pts)))
    for i, r in enumerate(pts):
        d = as_number(r["diff"])
        lo, hi = as_number(r.get("diff_low")), as_number(r.get("diff_high"))
        col = colors.get(str(r.get("verdict")), "#555555")
        if lo is not None and hi is not None:
            ax.plot([lo, hi], [i, i], color=col, lw=2)
        ax.plot([d], [i], "o", color=col)
    ax.axvline(0, color="#999999", lw=1)
    ax.set_yticks(range(len(pts)), [str(r.get(CELL)).replace(",", ", ") for r in pts], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"success {labels[1]} - {labels[0]} (95% interval)")
    ax.set_title(f"paired comparison {labels[0]} -> {labels[1]}", fontsize=10)
    return png_base64(fig)


def loss_plot(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]) -> str | None:
    """:func:`loss_figure` as a base64 PNG, None without any curve."""
    fig = loss_figure(curves)
    return None if fig is None else png_base64(fig)


def loss_figure(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]]):
    """Loss per epoch (runs of different size compare on passes over their data): the train loss (mean over
    each epoch's steps) thin, the holdout loss on top of it, thick with markers, in the run's colour."""
    if not any(len(v[0]) for c in curves.values() for v in c.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, parts) in enumerate(curves.items()):
        col = cycle[i % len(cycle)]
        epochs, values = parts.get("train", ((), ()))
        if len(epochs):
            ax.plot(epochs, values, "-", color=col, lw=1.0, alpha=0.55, zorder=2, label=f"{label} train")
        epochs, values = parts.get("holdout", ((), ()))
        if len(epochs):
            ax.plot(epochs, values, "--o", color=col, lw=2.2, ms=4.5, markeredgecolor="black", markeredgewidth=0.6,
                    zorder=3, label=f"{label} holdout")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (L1, normalized)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("training runs: train (mean per epoch) and holdout loss", fontsize=10)
    return fig

