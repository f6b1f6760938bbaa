"""Statistics of a group's runs: mean ± std per mode and tests between modes (scipy.stats)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .records import BASE_MODE, Run, mode_order


@dataclass
class Welch:
    t: float
    df: float
    p: float  # two-sided


def welch_ttest(a: list[float], b: list[float]) -> Welch | None:
    """Welch's unequal-variance t-test of mean(a) == mean(b) (scipy.stats.ttest_ind); None when
    undefined (n < 2, no variance)."""
    if len(a) < 2 or len(b) < 2 or np.var(a, ddof=1) + np.var(b, ddof=1) <= 0.0:
        return None
    with warnings.catch_warnings():  # one sample without spread (all runs equal) is fine when the other has some
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    return Welch(t=float(res.statistic), df=float(res.df), p=float(res.pvalue))


@dataclass
class ModeStats:
    """One row of a group's table."""

    mode: str
    nums: list[int]
    errors: list[float]
    mean: float
    std: float | None  # sample std (ddof=1); None with a single run
    time_per_epoch: float | None
    reduction_pp: float | None = None  # baseline mean - this mean (positive: lower error than baseline)
    reduction_rel_pct: float | None = None  # reduction_pp as % of the baseline mean
    welch: Welch | None = None  # against baseline
    paper: tuple[float, float, float] | None = None  # (mean, std, seconds per epoch)


def summarise(by_mode: dict[str, list[Run]], paper: dict | None) -> list[ModeStats]:
    """Per mode: mean ± std, time per epoch, and (non-baseline) reduction and Welch p vs baseline."""
    rows = []
    for mode in mode_order(by_mode):
        runs = sorted(by_mode[mode], key=lambda r: r.num)
        errs = [r.error for r in runs]
        times = [r.time_per_epoch for r in runs if r.time_per_epoch is not None]
        rows.append(ModeStats(mode=mode, nums=[r.num for r in runs], errors=errs, mean=float(np.mean(errs)),
                              std=float(np.std(errs, ddof=1)) if len(errs) > 1 else None,
                              time_per_epoch=float(np.mean(times)) if times else None,
                              paper=(paper or {}).get(mode)))
    base = next((r for r in rows if r.mode == BASE_MODE), None)
    for r in rows:
        if base is not None and r is not base:
            r.reduction_pp = base.mean - r.mean
            r.reduction_rel_pct = 100.0 * r.reduction_pp / base.mean if base.mean else None
            r.welch = welch_ttest(base.errors, r.errors)
    return rows
