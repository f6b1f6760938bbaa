"""The report as text: Markdown tables and the CSVs."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from ..fingerprints import EXPECTED
from .embeddings import NEAREST_K, nearest_classes
from .groups import Group, _nums
from .paper import PAPER, PAPER_RUNS
from .records import BASE_MODE, mode_label
from .stats import AgainstPaper, BestTest


MD_HEAD = "# LabelEmb results: "  # report.md's first line (how the report knows a report.md of its own)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}"


def _fmt_best(b: BestTest | None) -> str:
    if b is None:
        return "–"
    lo, hi = b.epoch_range
    return f"{b.mean:.2f} ± {_fmt(b.std)} at epoch {b.epoch_median:g} ({lo:g}–{hi:g})"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def group_table(g: Group) -> str:
    """The group's heading, metric, table and notes, in Markdown."""
    paper_name = PAPER.get(g.key, (None, None))[0]
    header = ["mode", "runs", "test error % (mean ± std)", "reduction vs baseline (pp)", "relative reduction",
              "p (Welch, vs baseline)", "time/epoch (s)"]
    if g.reports_final:
        header.append("secondary: lowest test error % over the evaluation points, selected on the test set "
                      "(mean ± std, median epoch (range))")
    if paper_name:
        header += [f"paper: test error % ({PAPER_RUNS} runs)", "paper: reduction", "paper: time/epoch (s)"]
    base_paper = PAPER[g.key][1].get(BASE_MODE) if paper_name else None
    rows = []
    for s in g.stats:
        row = [mode_label(s.mode), str(len(s.errors)), f"{s.mean:.2f} ± {_fmt(s.std)}",
               "–" if s.reduction_pp is None else f"{s.reduction_pp:+.2f}",
               "–" if s.reduction_rel_pct is None else f"{s.reduction_rel_pct:+.1f} %",
               _fmt_p(s.welch and s.welch.p), _fmt(s.time_per_epoch)]
        if g.reports_final:
            row.append(_fmt_best(s.best_test))
        if paper_name:
            if s.paper is None:
                row += ["–", "–", "–"]
            else:
                red = None if s.mode == BASE_MODE or base_paper is None else base_paper[0] - s.paper[0]
                rel = "" if red is None else f" ({100 * red / base_paper[0]:+.1f} %)"
                row += [f"{s.paper[0]:.2f} ± {s.paper[1]:.2f}", "–" if red is None else f"{red:+.2f}{rel}",
                        f"{s.paper[2]:.2f}"]
        rows.append(row)
    parts = [f"## {g.title}", "", f"Reported metric: **{g.metric}**, in %.", "", f"Data: {g.data}.", "",
             _md_table(header, rows), "",
             "Reduction = baseline mean − this mode's mean (positive: lower error than baseline), in "
             "percentage points; relative = as % of the baseline mean. std is the sample std (n − 1); "
             "p is the two-sided Welch t-test of this mode's errors against baseline's. "
             "time/epoch: the records' training time per epoch (evaluation excluded), mean over runs, on "
             + "; ".join(sorted({r.device for runs in g.by_mode.values() for r in runs})) + "."]
    if g.reports_final:
        parts += ["", "The secondary column is not the reported number: each run's lowest test error over its "
                     "evaluation points, i.e. an epoch chosen by looking at the test set (SPEC §2: the authors' "
                     "code does not record which epoch the paper reported; the final one is the honest reading)."]
    parts.append("")
    if paper_name:
        parts.append(f"Paper columns: SPEC §3, {paper_name}, mean ± std over {PAPER_RUNS} runs "
                     "(times on the authors' hardware).")
    else:
        parts.append(f"The paper has no number for {g.task} on {g.dataset} (SPEC §3 reports CIFAR-100, "
                     "CIFAR-10 and the MNIST CNN only).")
    if g.notes:
        parts += [""] + [f"- note: {n}" for n in g.notes]
    return "\n".join(parts) + "\n"


def comparison_table(g: Group) -> str:
    """Every mode against every other: paired differences over shared runs, with the unpaired test beside."""
    if not g.pairs:
        return ""
    rows = [[f"{mode_label(c.b)} vs {mode_label(c.a)}", str(c.pairs), str(c.unpaired),
             "–" if c.mean_diff is None else f"{c.mean_diff:+.3f}",
             "–" if c.ci is None else f"[{c.ci[0]:+.3f}, {c.ci[1]:+.3f}]", _fmt_p(c.p), _fmt_p(c.welch and c.welch.p)]
             for c in g.pairs]
    header = ["B vs A", "pairs", "unpaired runs left out", "mean paired difference B − A (pp)", "95% CI",
              "p (paired t)", "p (Welch, all runs)"]
    return (f"### Comparisons: {g.title}\n\n" + _md_table(header, rows) + "\n\n"
            "Run i of every mode starts from the same weights and sees the same batches, so each pair of modes "
            "is compared run by run over the run indices both have (pairs): the mean of error(B) − error(A) "
            "(negative: B has the lower error), its 95% confidence interval (t distribution) and the two-sided "
            "paired t-test (scipy.stats.ttest_rel). Runs whose index the other mode lacks are left out of these "
            "and counted; Welch's unpaired test uses every run of both.\n")


def _ci(ci: tuple[float, float] | None) -> str:
    return "–" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _side(a: AgainstPaper) -> str:
    """Where the interval of ours − paper lies, in words."""
    if a.ci is None:
        return a.no_ci
    if a.covers_zero:
        return "covers 0"
    return "lies above 0" if a.ci[0] > 0 else "lies below 0"


FEW_RUNS = 5  # below this many runs (pairs), a verdict says on how few


def verdict(a: AgainstPaper) -> str:
    """One plain sentence: do we reproduce this row of the paper?"""
    if a.ci is None:
        return f"Not decided: {a.no_ci}."
    # over a handful of runs an interval is wide, and a little narrow for its level (paper_section says
    # how much): either verdict says on how few
    few = f", on only {_count(a.ours.n, 'pair' if a.what == 'reduction' else 'run')}" if a.ours.n < FEW_RUNS else ""
    if a.what == "reduction":
        if a.covers_zero:
            return f"Reproduced{few}: our reduction agrees with the paper's."
        return f"Not reproduced{few}: our reduction is {'larger' if a.diff > 0 else 'smaller'} than the paper's."
    name = mode_label(a.what)
    if a.covers_zero:
        return f"Reproduced{few}: our {name} error agrees with the paper's."
    return f"Not reproduced{few}: our {name} error is {'higher' if a.diff > 0 else 'lower'} than the paper's."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _paper_cells(a: AgainstPaper) -> list[str]:
    if a.what == "reduction":
        return ["reduction: baseline − LabelEmb", f"{a.paper.mean:+.2f} {_ci(a.paper_ci)}",
                f"{a.ours.mean:+.2f} {_ci(a.ours_ci)} ({_count(a.ours.n, 'pair') if a.ours.n else 'unpaired means'})"]
    return [mode_label(a.what), f"{a.paper.mean:.2f} ± {a.paper.std:.2f}",
            f"{a.ours.mean:.2f} ± {_fmt(a.ours.std)} ({_count(a.ours.n, 'run')})"]


def paper_section(g: Group) -> str:
    """Ours beside the paper's numbers (SPEC §3): difference, interval, Welch's test, a sentence each."""
    if not g.against_paper:
        return ""
    rows = [_paper_cells(a) + [f"{a.diff:+.3f}", _ci(a.ci), _side(a), _fmt_p(a.p), verdict(a)]
            for a in g.against_paper]
    header = ["", f"paper ({PAPER_RUNS} runs)", "ours", "ours − paper (pp)", "95% CI", "the interval", "p (Welch)",
              "verdict"]
    on = EXPECTED.get(g.dataset) or f"the official {g.dataset}"
    not_known = f"the comparison below is not known to reproduce the paper's row, which is on {on}"
    warn = {"unrecorded": f"**These runs do not record which data they read**: {not_known}.",
            "partial": f"**Some of these runs do not record which data they read** (above): {not_known}.",
            "mixed": f"**These runs saw different data** (above): the comparison below pools them and is not a "
                     f"reproduction of the paper's row, which is on {on}.",
            "other": f"**These runs did not read {on}** ({g.data}): the comparison below is not a "
                     "reproduction of the paper's row.",
            "unverified": f"**Which files these runs read is not checked**: this suite knows no checksums of {on}, "
                          f"so their fingerprint ({g.data}) cannot show that they read it; compare it with the "
                          "checksums of your copy."}.get(g.data_match)
    if g.off_recipe:
        warn = (f"{warn}\n\n" if warn else "") + (
            "**These runs were not all trained with the recipe** (SPEC §2, the script's defaults): "
            f"{'; '.join(g.off_recipe)}. The comparison below is not a reproduction of the paper's row.")
    warn = f"\n{warn}\n" if warn else ""
    return (f"### Against the paper: {g.title}, {PAPER[g.key][0]}\n{warn}\n" + _md_table(header, rows) + "\n\n"
            "Paper: SPEC §3, mean ± std over its 20 runs per mode. Each mode's row: our mean − the paper's, with "
            "the Welch interval and Welch's two-sided test computed from the two summaries "
            "(scipy.stats.ttest_ind_from_stats). The reduction row: our paired estimate of baseline − LabelEmb "
            "over the run indices both modes have, with its 95% interval, beside the paper's (from its two "
            "summaries; the paper's runs cannot be paired); their difference's interval adds both variances "
            "(Welch–Satterthwaite degrees of freedom). \"Reproduced\" means the 95% interval of the difference "
            "covers 0: our numbers are consistent with the paper's, not proven equal. On fewer than "
            f"{FEW_RUNS} runs (pairs) either verdict says on how few: such intervals are wide, and a little "
            "narrow for their level (simulated, sweeps/ci_coverage.py: they cover the truth in 92.6% of draws "
            "at 3 runs, 93.9% at 4, 95% from about 10).\n")


def nearest_section(g: Group) -> str:
    """Markdown listing of each class's nearest classes under the mean learned soft targets."""
    if g.mean_soft is None:
        return ""
    rows = [[name, f"{own:.3f}"] + [f"{c} ({m:.3f})" for c, m in near]
            for name, own, near in nearest_classes(g.mean_soft, g.classes)]
    k = min(NEAREST_K, max(len(g.classes) - 1, 0))
    header = ["class", "own mass"] + [f"nearest {i + 1}" for i in range(k)]
    return (f"### Nearest classes under the learned embedding: {g.task} on {g.dataset}\n\n"
            f"Soft targets softmax(E) after the last epoch, mean over {len(g.soft_nums)} emb run(s) "
            f"({_nums(g.soft_nums)}); per class (row) the {k} other classes with the most soft-target "
            "mass.\n\n" + _md_table(header, rows) + "\n")


def group_sections(g: Group) -> list[str]:
    """A group's tables: its modes, their comparisons, and beside the paper where it has the task."""
    return [t for t in (group_table(g), comparison_table(g), paper_section(g)) if t]


def folder_markdown(folder: Path, groups: list[Group], skipped: list[tuple[str, str]], curves: str | None) -> str:
    parts = [f"{MD_HEAD}{folder.name or folder}", "",
             "Made by `python3 -m labelemb.report`; counted: complete runs, one row per mode.", ""]
    if not groups:
        parts += ["No complete runs yet.", ""]
    for g in groups:
        parts += group_sections(g)
    if curves:
        parts += ["## Figures", "", f"Test error vs epoch, every run light, the mean of each mode deep: "
                  f"![error curves]({curves})", ""]
    for g in groups:
        if g.paper_figure:
            parts += [f"As the paper's figure for {PAPER[g.key][0]} ({g.task} on {g.dataset}): baseline (blue) and "
                      f"LabelEmb (red) alone, every run light, the mean deep: ![paper figure]({g.paper_figure})", ""]
    for g in groups:
        if g.heatmap_file:
            parts += [f"Soft targets softmax(E) after the last epoch, {g.task} on {g.dataset}, {g.heatmap_what}; "
                      f"{g.heatmap_note}: ![heatmap]({g.heatmap_file})", ""]
    for g in groups:
        sec = nearest_section(g)
        if sec:
            parts += [sec]
    parts += ["## Skipped files", ""]
    if skipped:
        parts += [_md_table(["file", "reason"], [[n, r] for n, r in skipped])]
    else:
        parts += ["None."]
    return "\n".join(parts).rstrip() + "\n"


CSV_FIELDS = ["task", "dataset", "arch", "mode", "metric", "runs", "run_nums", "test_error_mean", "test_error_std",
              "reduction_pp", "reduction_rel_pct", "welch_t", "welch_df", "p_welch", "time_per_epoch_mean",
              "paper_test_error_mean", "paper_test_error_std", "paper_time_per_epoch",
              "best_test_error_mean", "best_test_error_std", "best_test_epoch_median"]
PAPER_FIELDS = ["task", "dataset", "row", "paper_mean", "paper_std", "paper_runs", "paper_ci_low", "paper_ci_high",
                "ours_mean", "ours_std", "ours_runs", "ours_ci_low", "ours_ci_high", "diff_ours_minus_paper",
                "ci_low", "ci_high", "ci_level", "welch_t", "welch_df", "p_welch", "verdict", "data_match",
                "off_recipe"]
COMPARISON_FIELDS = ["task", "dataset", "mode_a", "mode_b", "pairs", "unpaired", "mean_diff_b_minus_a", "ci_low",
                     "ci_high", "ci_level", "p_paired", "p_welch"]


def _csv(fields: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _best_columns(b: BestTest | None) -> dict:
    return {"best_test_error_mean": b and b.mean, "best_test_error_std": b and b.std,
            "best_test_epoch_median": b and b.epoch_median}


def _mode_row(g: Group, s) -> dict:
    runs = g.by_mode[s.mode]
    return {"task": g.task, "dataset": g.dataset, "arch": ";".join(sorted({r.arch for r in runs})),
            "mode": s.mode, "metric": ";".join(sorted({r.metric for r in runs})), "runs": len(s.errors),
            "run_nums": ";".join(map(str, s.nums)), "test_error_mean": s.mean,
            "test_error_std": s.std, "reduction_pp": s.reduction_pp,
            "reduction_rel_pct": s.reduction_rel_pct, "welch_t": s.welch and s.welch.t,
            "welch_df": s.welch and s.welch.df, "p_welch": s.welch and s.welch.p,
            "time_per_epoch_mean": s.time_per_epoch,
            "paper_test_error_mean": s.paper and s.paper[0], "paper_test_error_std": s.paper and s.paper[1],
            "paper_time_per_epoch": s.paper and s.paper[2],
            **_best_columns(s.best_test if g.reports_final else None)}


def csv_text(groups: list[Group]) -> str:
    """report.csv: one row per task/dataset/mode."""
    return _csv(CSV_FIELDS, [_mode_row(g, s) for g in groups for s in g.stats])


def comparisons_csv(groups: list[Group]) -> str:
    """comparisons.csv: one row per pair of modes of a group (see :func:`comparison_table`)."""
    return _csv(COMPARISON_FIELDS, [
        {"task": g.task, "dataset": g.dataset, "mode_a": c.a, "mode_b": c.b, "pairs": c.pairs,
         "unpaired": c.unpaired, "mean_diff_b_minus_a": c.mean_diff, "ci_low": c.ci and c.ci[0],
         "ci_high": c.ci and c.ci[1], "ci_level": c.level, "p_paired": c.p, "p_welch": c.welch and c.welch.p}
        for g in groups for c in g.pairs])


def paper_csv(groups: list[Group]) -> str:
    """against_paper.csv: per group with a paper number, one row per mode and one for the reduction."""
    return _csv(PAPER_FIELDS, [
        {"task": g.task, "dataset": g.dataset, "row": a.what, "paper_mean": a.paper.mean, "paper_std": a.paper.std,
         "paper_runs": a.paper.n, "paper_ci_low": a.paper_ci and a.paper_ci[0],
         "paper_ci_high": a.paper_ci and a.paper_ci[1], "ours_mean": a.ours.mean, "ours_std": a.ours.std,
         "ours_runs": a.ours.n, "ours_ci_low": a.ours_ci and a.ours_ci[0], "ours_ci_high": a.ours_ci and a.ours_ci[1],
         "diff_ours_minus_paper": a.diff, "ci_low": a.ci and a.ci[0], "ci_high": a.ci and a.ci[1],
         "ci_level": a.level, "welch_t": a.t, "welch_df": a.df, "p_welch": a.p, "verdict": verdict(a),
         "data_match": g.data_match, "off_recipe": "; ".join(g.off_recipe)}
        for g in groups for a in g.against_paper])
