"""The report as text: Markdown tables and the CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from .embeddings import NEAREST_K, nearest_classes
from .groups import Group, _nums
from .paper import PAPER, PAPER_RUNS
from .records import BASE_MODE, MODE_NAMES
from .stats import Welch


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _fmt_p(w: Welch | None) -> str:
    if w is None:
        return "–"
    return f"{w.p:.1e}" if w.p < 1e-4 else f"{w.p:.4f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def group_table(g: Group) -> str:
    """The group's heading, metric, table and notes, in Markdown."""
    paper_name = PAPER.get(g.key, (None, None))[0]
    header = ["mode", "runs", "test error % (mean ± std)", "reduction vs baseline (pp)", "relative reduction",
              "p (Welch, vs baseline)", "time/epoch (s)"]
    if paper_name:
        header += [f"paper: test error % ({PAPER_RUNS} runs)", "paper: reduction", "paper: time/epoch (s)"]
    base_paper = PAPER[g.key][1].get(BASE_MODE) if paper_name else None
    rows = []
    for s in g.stats:
        row = [MODE_NAMES.get(s.mode, s.mode), str(len(s.errors)), f"{s.mean:.2f} ± {_fmt(s.std)}",
               "–" if s.reduction_pp is None else f"{s.reduction_pp:+.2f}",
               "–" if s.reduction_rel_pct is None else f"{s.reduction_rel_pct:+.1f} %",
               _fmt_p(s.welch), _fmt(s.time_per_epoch)]
        if paper_name:
            if s.paper is None:
                row += ["–", "–", "–"]
            else:
                red = None if s.mode == BASE_MODE or base_paper is None else base_paper[0] - s.paper[0]
                rel = "" if red is None else f" ({100 * red / base_paper[0]:+.1f} %)"
                row += [f"{s.paper[0]:.2f} ± {s.paper[1]:.2f}", "–" if red is None else f"{red:+.2f}{rel}",
                        f"{s.paper[2]:.2f}"]
        rows.append(row)
    parts = [f"## {g.title}", "", f"Reported metric: **{g.metric}**, in %.", "", _md_table(header, rows), "",
             "Reduction = baseline mean − this mode's mean (positive: lower error than baseline), in "
             "percentage points; relative = as % of the baseline mean. std is the sample std (n − 1); "
             "p is the two-sided Welch t-test of this mode's errors against baseline's. "
             "time/epoch: the records' training time per epoch (evaluation excluded), mean over runs, on "
             + "; ".join(sorted({r.device for runs in g.by_mode.values() for r in runs})) + "."]
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


def folder_markdown(folder: Path, groups: list[Group], skipped: list[tuple[str, str]], curves: str | None) -> str:
    parts = [f"# LabelEmb results: {folder.name or folder}", "",
             "Made by `python3 -m labelemb.report`; counted: complete runs, one row per mode.", ""]
    if not groups:
        parts += ["No complete runs yet.", ""]
    for g in groups:
        parts.append(group_table(g))
    if curves:
        parts += ["## Figures", "", f"Test error vs epoch, every run light, the mean of each mode deep: "
                  f"![error curves]({curves})", ""]
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
              "paper_test_error_mean", "paper_test_error_std", "paper_time_per_epoch"]


def csv_text(groups: list[Group]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for g in groups:
        for s in g.stats:
            runs = g.by_mode[s.mode]
            w.writerow({"task": g.task, "dataset": g.dataset, "arch": ";".join(sorted({r.arch for r in runs})),
                        "mode": s.mode, "metric": ";".join(sorted({r.metric for r in runs})), "runs": len(s.errors),
                        "run_nums": ";".join(map(str, s.nums)), "test_error_mean": s.mean,
                        "test_error_std": s.std, "reduction_pp": s.reduction_pp,
                        "reduction_rel_pct": s.reduction_rel_pct, "welch_t": s.welch and s.welch.t,
                        "welch_df": s.welch and s.welch.df, "p_welch": s.welch and s.welch.p,
                        "time_per_epoch_mean": s.time_per_epoch,
                        "paper_test_error_mean": s.paper and s.paper[0], "paper_test_error_std": s.paper and s.paper[1],
                        "paper_time_per_epoch": s.paper and s.paper[2]})
    return buf.getvalue()
