"""Statistics of a group's runs: mean ± std per mode and tests between modes (scipy.stats).

Run i of every mode starts from the same weights and sees the same batches (the seed is the run
index), so two modes of a task are a paired experiment over the run indices both have (with the
same seed: runs given other ``--seed`` values are not paired): the
paired t-test and the confidence interval of the mean paired difference use exactly those pairs.
Welch's unpaired test (what the paper's readers expect) uses every run of both modes.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace

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
    undefined (n < 2, neither sample has any spread: see no_spread)."""
    if len(a) < 2 or len(b) < 2 or (no_spread(np.asarray(a)) and no_spread(np.asarray(b))):
        return None
    with warnings.catch_warnings():  # one sample without spread (all runs equal) is fine when the other has some
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    return Welch(t=float(res.statistic), df=float(res.df), p=float(res.pvalue))


@dataclass
class Paired:
    """Mode ``b`` against mode ``a`` over the run indices both have."""

    a: str
    b: str
    pairs: int
    unpaired: int  # runs of either mode whose index the other lacks: left out of the paired numbers
    mean_diff: float | None  # mean over the pairs of error(b) - error(a), in points (negative: b lower)
    ci: tuple[float, float] | None  # its confidence interval (t distribution, ``level``)
    p: float | None  # two-sided paired t-test (scipy.stats.ttest_rel); None with < 2 pairs or no spread
    welch: Welch | None  # unpaired, over all runs of both modes
    level: float = 0.95
    se: float | None = None  # standard error of mean_diff (where there is an interval)


def no_spread(d: np.ndarray) -> bool:
    """Whether the paired differences are all equal. Errors come in steps (0.01 points on MNIST's
    10,000 test images), so equal differences are not rare with few pairs, and their float std is
    ~1e-17 rather than 0: a test on that would give p ~ 1e-30 and an interval of zero width."""
    return bool(np.ptp(d) <= 1e-9)


def paired_ttest(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Paired:
    """``b`` against ``a`` ({run index: error}) over the indices both have; the modes' names are left empty."""
    shared = sorted(set(a) & set(b))
    unpaired = len(set(a) ^ set(b))
    welch = welch_ttest(list(a.values()), list(b.values()))
    if not shared:
        return Paired("", "", 0, unpaired, None, None, None, welch, level)
    xa, xb = np.array([a[i] for i in shared]), np.array([b[i] for i in shared])
    d = xb - xa
    if len(d) < 2 or no_spread(d):  # neither a test nor an interval
        return Paired("", "", len(d), unpaired, float(d.mean()), None, None, welch, level)
    res = stats.ttest_rel(xb, xa)
    ci = res.confidence_interval(level)
    return Paired("", "", len(d), unpaired, float(d.mean()), (float(ci.low), float(ci.high)), float(res.pvalue),
                  welch, level, se=float(stats.sem(d)))


def compare_modes(by_mode: dict[str, list[Run]]) -> list[Paired]:
    """Every mode against every later one in the report's order (baseline, emb, then the others).
    Runs pair on their index and seed both (a run given another --seed starts from other weights:
    it is counted unpaired)."""
    order = mode_order(by_mode)
    errors = {m: {(r.num, json.dumps(r.config.get("seed"))): r.error for r in by_mode[m]} for m in order}
    out = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            out.append(replace(paired_ttest(errors[a], errors[b]), a=a, b=b))
    return out


@dataclass
class BestTest:
    """Each run's lowest test error over its evaluation points (selected on the test set)."""

    mean: float
    std: float | None
    epoch_median: float  # where it happened: the median over the runs of its (first) epoch
    epoch_range: tuple[float, float]


def best_test(runs: list[Run]) -> BestTest | None:
    best = [min(r.curve, key=lambda point: point[1]) for r in runs if r.curve]  # (epoch, error), first of ties
    if not best:
        return None
    errs, epochs = [e for _, e in best], [ep for ep, _ in best]
    return BestTest(mean=float(np.mean(errs)), std=float(np.std(errs, ddof=1)) if len(errs) > 1 else None,
                    epoch_median=float(np.median(epochs)), epoch_range=(min(epochs), max(epochs)))


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
    best_test: BestTest | None = None  # secondary: lowest test error over the evaluation points


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
                              paper=(paper or {}).get(mode), best_test=best_test(runs)))
    base = next((r for r in rows if r.mode == BASE_MODE), None)
    for r in rows:
        if base is not None and r is not base:
            r.reduction_pp = base.mean - r.mean
            r.reduction_rel_pct = 100.0 * r.reduction_pp / base.mean if base.mean else None
            r.welch = welch_ttest(base.errors, r.errors)
    return rows


# ----------------------------------------------------------------------------- against the paper
@dataclass
class Summary:
    """Mean, sample std and size of a set of runs (the paper gives only these)."""

    mean: float
    std: float | None
    n: int


@dataclass
class AgainstPaper:
    """One row of "against the paper": ours − the paper's, its interval and Welch's test.

    ``what`` is a mode, or ``"reduction"``: baseline − emb (positive: LabelEmb lower), whose
    ``ours_ci`` is the paired interval (run i of both modes shares its seed) and whose ``paper_ci``
    comes from the paper's two unpaired summaries; there ``std`` is None (a difference of means).
    """

    what: str
    ours: Summary
    paper: Summary
    diff: float  # ours.mean − paper.mean
    ci: tuple[float, float] | None  # of diff
    p: float | None  # two-sided
    t: float | None = None
    df: float | None = None
    ours_ci: tuple[float, float] | None = None  # reduction rows: the interval of our reduction
    paper_ci: tuple[float, float] | None = None  # ... and of the paper's
    level: float = 0.95
    no_ci: str = "too few runs for an interval"  # why ``ci`` is None, where it is

    @property
    def covers_zero(self) -> bool | None:
        return None if self.ci is None else self.ci[0] <= 0.0 <= self.ci[1]


def _interval(centre: float, var: float, df: float, level: float) -> tuple[float, float]:
    half = float(stats.t.ppf((1 + level) / 2, df)) * math.sqrt(var)
    return centre - half, centre + half


def _welch_df(parts: list[tuple[float, float]]) -> float:
    """Welch–Satterthwaite degrees of freedom of a sum of variances, each (variance, its df)."""
    return sum(v for v, _ in parts) ** 2 / sum(v * v / d for v, d in parts)


def mode_against_paper(mode: str, ours: Summary, paper: Summary, level: float = 0.95) -> AgainstPaper:
    """Our runs of ``mode`` against the paper's summary: Welch's test from the summary statistics
    (scipy.stats.ttest_ind_from_stats) and the Welch interval of the difference."""
    diff = ours.mean - paper.mean
    if ours.std is None or ours.n < 2 or ours.std + paper.std <= 0.0:
        return AgainstPaper(mode, ours, paper, diff, None, None, level=level)
    res = stats.ttest_ind_from_stats(ours.mean, ours.std, ours.n, paper.mean, paper.std, paper.n, equal_var=False)
    parts = [(ours.std ** 2 / ours.n, ours.n - 1), (paper.std ** 2 / paper.n, paper.n - 1)]
    df = _welch_df(parts)
    return AgainstPaper(mode, ours, paper, diff, _interval(diff, sum(v for v, _ in parts), df, level),
                        float(res.pvalue), t=float(res.statistic), df=df, level=level)


def reduction_against_paper(base: list[float], emb: list[float], pair: Paired, paper_base: Summary,
                            paper_emb: Summary, level: float = 0.95) -> AgainstPaper:
    """Our reduction baseline − emb against the paper's. Ours is paired over the shared run indices
    (``pair``: emb against baseline), the paper's from its two unpaired summaries; the difference's
    interval adds the two variances, with Welch–Satterthwaite degrees of freedom."""
    p_var = paper_base.std ** 2 / paper_base.n + paper_emb.std ** 2 / paper_emb.n
    p_df = _welch_df([(paper_base.std ** 2 / paper_base.n, paper_base.n - 1),
                      (paper_emb.std ** 2 / paper_emb.n, paper_emb.n - 1)])
    paper = Summary(paper_base.mean - paper_emb.mean, None, paper_base.n)
    paper_ci = _interval(paper.mean, p_var, p_df, level)
    # over the shared seeds where there are any (the row counts pairs), else over all runs
    ours_mean = -pair.mean_diff if pair.mean_diff is not None else float(np.mean(base) - np.mean(emb))
    if pair.mean_diff is None or pair.ci is None:
        why = ("no run index (and seed) both modes have (ours: the unpaired means)" if not pair.pairs else
               "too few pairs for an interval" if pair.pairs < 2 else
               "the paired differences are all equal (no spread, no interval)")
        return AgainstPaper("reduction", Summary(ours_mean, None, pair.pairs), paper, ours_mean - paper.mean, None,
                            None, paper_ci=paper_ci, level=level, no_ci=why)
    # the paired estimate's variance: that of the mean of emb − baseline over the pairs
    o_df, o_var = pair.pairs - 1, pair.se ** 2
    ours = Summary(ours_mean, None, pair.pairs)
    diff = ours_mean - paper.mean
    df = _welch_df([(o_var, o_df), (p_var, p_df)])
    t = diff / math.sqrt(o_var + p_var)
    return AgainstPaper("reduction", ours, paper, diff, _interval(diff, o_var + p_var, df, level),
                        float(2 * stats.t.sf(abs(t), df)), t=t, df=df, ours_ci=(-pair.ci[1], -pair.ci[0]),
                        paper_ci=paper_ci, level=level)
