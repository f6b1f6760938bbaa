"""How often the report's 95% intervals against the paper cover the truth, by simulation (run it:
``python3 sweeps/ci_coverage.py``, about 10 s).

The truth is the paper's MNIST CNN row (SPEC §3): baseline 0.85 ± 0.11, LabelEmb 0.55 ± 0.03, 20 runs
each. Our n runs per mode are drawn from the same distributions, so every difference is 0 and a
95% interval should cover 0 in 95% of the draws. Rows as the report computes them
(labelemb.report.stats): a mode's row, Welch's interval from the two summaries; the reduction row,
our paired reduction (n pairs, correlation ``RHO`` between a seed's two runs) against the paper's
from its two summaries, with Welch–Satterthwaite degrees of freedom.
"""
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labelemb import modes  # noqa: E402  (the paper's numbers live in the mode table)

ROW = ("cnn", "mnist")
BASE, METHOD = (modes.with_role(r) for r in ("reference", "method"))
PAPER = {m.label: m.paper[ROW][:2] for m in (BASE, METHOD)}  # mean, std
N_PAPER, DRAWS, RHO = 20, 200_000, 0.5


def welch(m1, v1, df1, m2, v2, df2):
    """Whether the 95% Welch interval of m1 - m2 covers 0 (v: variances of the means)."""
    df = (v1 + v2) ** 2 / (v1 ** 2 / df1 + v2 ** 2 / df2)
    return np.abs(m1 - m2) <= stats.t.ppf(0.975, df) * np.sqrt(v1 + v2)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"runs (pairs) | {BASE.label} row | {METHOD.label} row | reduction row")
    for n in (3, 4, 5, 10, 20):
        paper = {m: rng.normal(mu, sd, (DRAWS, N_PAPER)) for m, (mu, sd) in PAPER.items()}
        z = rng.standard_normal((DRAWS, n, 2))
        z[..., 1] = RHO * z[..., 0] + np.sqrt(1 - RHO ** 2) * z[..., 1]  # a seed's two runs, correlated
        ours = {m: mu + sd * z[..., i] for i, (m, (mu, sd)) in enumerate(PAPER.items())}
        mean = {k: {m: x.mean(1) for m, x in d.items()} for k, d in (("p", paper), ("o", ours))}
        var = {k: {m: x.var(1, ddof=1) / x.shape[1] for m, x in d.items()} for k, d in (("p", paper), ("o", ours))}
        rows = [welch(mean["o"][m], var["o"][m], n - 1, mean["p"][m], var["p"][m], N_PAPER - 1).mean() for m in PAPER]
        b, e = BASE.label, METHOD.label
        d = ours[b] - ours[e]
        vp = var["p"][b] + var["p"][e]
        dfp = vp ** 2 / (var["p"][b] ** 2 / (N_PAPER - 1) + var["p"][e] ** 2 / (N_PAPER - 1))
        red = welch(d.mean(1), d.var(1, ddof=1) / n, n - 1, mean["p"][b] - mean["p"][e], vp, dfp).mean()
        print(f"{n:>12} | {rows[0]:.3f} | {rows[1]:.3f} | {red:.3f}")


if __name__ == "__main__":
    main()
