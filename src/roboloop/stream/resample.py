"""Vectorized resampling of one stream onto grid times (pure numpy, no I/O).

Times are int64 nanoseconds. `tol_ns` absorbs float rounding of logged times: a row
logged up to `tol_ns` after a grid time counts as *at* that grid time, which is what makes
multi-rate alignment exact at grid points (a 50 Hz row at 0.3 s is the value at the
10 Hz grid point 0.3 s even if it was stored as 300000001 ns).
"""

from __future__ import annotations

import numpy as np


def latest_indices(times: np.ndarray, query: np.ndarray, tol_ns: int = 0) -> np.ndarray:
    """Index of the last row at or before each query time (-1 where there is none)."""
    return np.searchsorted(times, query + tol_ns, side="right") - 1


def latest_at(times: np.ndarray, values: np.ndarray, query: np.ndarray, tol_ns: int = 0) -> np.ndarray:
    """Latest-at values; query times before the first row take the first row."""
    idx = latest_indices(times, query, tol_ns)
    np.maximum(idx, 0, out=idx)
    return values[idx]


def linear(times: np.ndarray, values: np.ndarray, query: np.ndarray, tol_ns: int = 0) -> np.ndarray:
    """Linear interpolation between the rows around each query time (float64).

    Exact at rows (within `tol_ns`); before the first row -> first row, after the last -> last row.
    """
    n = len(times)
    idx = latest_indices(times, query, tol_ns)
    i0 = np.clip(idx, 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    t0 = times[i0]
    dt = (times[i1] - t0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where((dt > 0) & (idx >= 0) & (query - t0 > tol_ns), (query - t0) / dt, 0.0)
    np.clip(w, 0.0, 1.0, out=w)
    v0 = values[i0].astype(np.float64, copy=False)
    v1 = values[i1].astype(np.float64, copy=False)
    w = w.reshape((-1,) + (1,) * (values.ndim - 1))
    return v0 + w * (v1 - v0)


def window_positions(k0: int, k1: int, offsets: np.ndarray | None, n_grid: int) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """Grid positions needed for samples `k0 <= k < k1` with window `offsets`.

    Returns `(positions, mask, lo, hi)`: `positions` (`[n]` or `[n, K]`) clipped into the
    episode's grid `[0, n_grid)`, `mask` (`[n, K]`, True where the unclipped position was
    inside the episode; None without a window), and the range `lo..hi` (inclusive) of grid
    positions they touch, so a field is resampled once per position, then gathered.
    """
    k = np.arange(k0, k1, dtype=np.int64)
    if offsets is None:
        return k, None, k0, k1 - 1
    kk = k[:, None] + offsets[None, :]
    mask = (kk >= 0) & (kk < n_grid)
    np.clip(kk, 0, n_grid - 1, out=kk)
    lo = max(0, k0 + int(offsets.min()))
    hi = min(n_grid - 1, k1 - 1 + int(offsets.max()))
    return kk, mask, lo, hi
