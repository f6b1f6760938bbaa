"""The paper-style report over one or more results folders: tables, curves, heatmaps.

Usage::

    python3 -m labelemb.report mlp_results cnn_results [--run NUM] [--classes a,b,c] [--include-dry-run]

Every ``*.json`` run record (``"format": "labelemb-run/1"``) of each folder is read. Runs whose
status is ``complete`` (and, unless ``--include-dry-run``, that are not dry runs) are grouped by
(task, dataset); anything else (running, interrupted, failed, dry-run, unreadable, half-written)
is listed as skipped, with the reason, and printed as a warning; the rest is still summarised.

Per group: test error mean ± sample std over runs per mode (baseline first, emb second, other
modes after), runs, mean time per epoch, the reduction of each mode's error against baseline
(percentage points and % of the baseline mean), a two-sided Welch t-test p-value against
baseline, and the paper's numbers (SPEC §3) where task and dataset match. The error is each
record's ``reported`` metric: the final test error, or (MLP) the test error at the point of best
validation accuracy; the report says which.

Written into each folder (atomically), describing only that folder's records:

- ``report.md``  the tables, the metric, figure links, each class's nearest classes under the
                 learned embedding, and the skipped files;
- ``report.csv`` one row per task/dataset/mode with the numbers (full precision);
- ``curves.png`` test error vs epoch, one panel (600 x 400 px) per task/dataset group, up to three
                 panels per row: every run a light thin curve, the mean a thick one (baseline
                 blue, LabelEmb red, other modes other colours);
- ``heatmap.png`` (800 x 700 px) the soft targets softmax(E) after the last epoch, mean over the
                 emb runs (or run ``--run NUM``), grey scale 0..1. When a folder holds emb runs
                 of more than one task/dataset group there is one heatmap per group, named
                 ``heatmap_<task>_<dataset>.png`` instead. Groups of more than 20 classes show a
                 subset: the 15 CIFAR-100 labels of the paper's figure. ``--classes a,b,c``
                 picks the classes (case and '_' vs ' ' ignored): each group shows those of the
                 names it has (a group with none keeps its default); a name that no group has
                 is an error.

The nearest-class listing always uses the mean soft-target matrix over the group's emb runs.
The Markdown tables are also printed to stdout. Bad input (a missing folder, a folder without
any run record, unknown class names, a ``--run`` no group has) is one line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .results import RECORD_FORMAT, atomic_write

EMB_MODE = "emb"
BASE_MODE = "baseline"
MODE_NAMES = {BASE_MODE: "baseline", EMB_MODE: "LabelEmb"}
MODE_COLORS = {BASE_MODE: "tab:blue", EMB_MODE: "tab:red"}
OTHER_COLORS = ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")

# SPEC §3: (task, dataset) -> name and {mode: (mean test error %, std, seconds per epoch)}, 20 runs each.
PAPER = {
    ("cifar100", "cifar100"): ("CIFAR-100, ResNet-18", {BASE_MODE: (27.35, 0.40, 86.3), EMB_MODE: (23.97, 0.33, 87.8)}),
    ("cifar10", "cifar10"): ("CIFAR-10, ResNet-8", {BASE_MODE: (8.66, 0.43, 35.1), EMB_MODE: (6.97, 0.22, 42.5)}),
    ("cnn", "mnist"): ("MNIST, CNN", {BASE_MODE: (0.85, 0.11, 4.60), EMB_MODE: (0.55, 0.03, 5.46)}),
}
PAPER_RUNS = 20
METRIC_WORDS = {
    "final": "final test error (test error at the last evaluation)",
    "best_val": "test error at the evaluation point with the best validation accuracy (ties go to the later point)",
}
# The CIFAR-100 labels of the paper's heatmap, in its order.
PAPER_HEATMAP_CLASSES = ("baby", "bottle", "apple", "boy", "bowl", "orange", "girl", "can", "sweet_pepper",
                         "man", "cup", "pear", "woman", "plate", "mushroom")
MAX_HEATMAP_CLASSES = 20
NEAREST_K = 3
PANEL_INCHES = (6.0, 4.0)
PANELS_PER_ROW = 3
HEATMAP_INCHES = (8.0, 7.0)
DPI = 100
# Config keys that should agree between runs of one group (tau/alpha/beta: between non-baseline runs).
SHARED_KEYS = ("arch", "lr", "lr_decay_every", "lr_decay", "epochs", "batch_size", "evals_per_epoch",
               "drop_last", "val_size", "reported")
EMB_KEYS = ("tau", "alpha", "beta")
# Opt-in options beyond the paper: runs of one mode should agree on them. A record written before
# an option existed has its default.
VARIANT_KEYS = {"emb_dim": 0, "init_emb": None, "freeze_emb": False, "smoothing": None, "resize": False}


# ----------------------------------------------------------------------------- records
@dataclass
class Run:
    """One counted run: the fields of its record the report uses."""

    path: Path
    task: str
    dataset: str
    arch: str
    mode: str
    num: int
    error: float  # the reported test error, %
    metric: str  # "final" | "best_val" | whatever the record says
    time_per_epoch: float | None
    curve: list[tuple[float, float]]  # (epoch, test error %)
    classes: list[str]
    config: dict
    device: str = "unrecorded device"  # where it was timed

    @property
    def emb_path(self) -> Path:
        return self.path.with_name(self.path.stem + "_emb.npy")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_run(path: Path, rec: dict) -> Run:
    """A Run from a complete record; ValueError with the reason when a field is missing or wrong."""
    for k in ("task", "dataset", "mode"):
        if not isinstance(rec.get(k), str) or not rec[k]:
            raise ValueError(f"field {k!r} missing or not a string")
    rep = rec.get("reported")
    if not isinstance(rep, dict) or not _number(rep.get("test_error_pct")):
        raise ValueError("no reported test error")
    num = rec.get("num")
    if not isinstance(num, int) or isinstance(num, bool):
        raise ValueError("field 'num' missing or not an integer")
    tpe = rec.get("time_per_epoch")
    curve = [(float(r["epoch"]), float(r["test_error_pct"])) for r in rec.get("curve") or []
             if isinstance(r, dict) and _number(r.get("epoch")) and _number(r.get("test_error_pct"))]
    classes = rec.get("classes")
    classes = [str(c) for c in classes] if isinstance(classes, list) else []
    config = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    env = rec.get("env") if isinstance(rec.get("env"), dict) else {}
    device = " ".join(str(env[k]) for k in ("device", "device_name") if env.get(k)) or "unrecorded device"
    return Run(path=path, task=rec["task"], dataset=rec["dataset"], arch=str(rec.get("arch", "?")),
               mode=rec["mode"], num=num, error=float(rep["test_error_pct"]), metric=str(rep.get("metric", "?")),
               time_per_epoch=float(tpe) if _number(tpe) else None, curve=curve, classes=classes, config=config,
               device=device)


def load_folder(folder: Path, include_dry_run: bool) -> tuple[list[Run], list[tuple[str, str]], int]:
    """(counted runs, skipped (file name, reason), number of files that are or may be run records)."""
    runs, skipped, candidates = [], [], 0
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            candidates += 1
            skipped.append((path.name, f"unreadable or half-written JSON ({_one_line(e)})"))
            continue
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
            skipped.append((path.name, f"not a {RECORD_FORMAT} run record"))
            continue
        candidates += 1
        status = rec.get("status")
        if status != "complete":
            why = f"status {status!r}, not complete"
            if status == "failed" and rec.get("error"):
                why += f": {_one_line(rec['error'])}"
            skipped.append((path.name, why))
            continue
        if rec.get("dry_run") and not include_dry_run:
            skipped.append((path.name, "dry run (counted only with --include-dry-run)"))
            continue
        try:
            runs.append(parse_run(path, rec))
        except (ValueError, TypeError, KeyError) as e:
            skipped.append((path.name, f"malformed record: {_one_line(e)}"))
    return runs, skipped, candidates


def _one_line(x) -> str:
    return " ".join(str(x).split())


# ----------------------------------------------------------------------------- statistics
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


@dataclass
class Welch:
    t: float
    df: float
    p: float  # two-sided


def welch_ttest(a: list[float], b: list[float]) -> Welch | None:
    """Welch's unequal-variance t-test of mean(a) == mean(b); None when undefined (n < 2, no variance)."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return None
    v1, v2 = float(np.var(a, ddof=1)) / n1, float(np.var(b, ddof=1)) / n2
    if v1 + v2 <= 0.0:
        return None
    t = (float(np.mean(a)) - float(np.mean(b))) / math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    p = betainc(df / 2.0, 0.5, df / (df + t * t))  # P(|T_df| >= |t|)
    return Welch(t=t, df=df, p=min(max(p, 0.0), 1.0))


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


def mode_order(modes) -> list[str]:
    """baseline first, emb second, then any other mode alphabetically."""
    rank = {BASE_MODE: 0, EMB_MODE: 1}
    return sorted(modes, key=lambda m: (rank.get(m, 2), m))


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


# ----------------------------------------------------------------------------- embeddings
def soft_targets(E: np.ndarray) -> np.ndarray:
    """softmax over each row of E: row y is the soft target of label y."""
    z = np.asarray(E, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def load_soft_targets(run: Run) -> np.ndarray:
    """softmax(E) after the run's last epoch; ValueError with the reason if the file is missing or wrong."""
    try:
        E = np.load(run.emb_path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError("no embedding file") from None
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"unreadable embedding ({_one_line(e)})") from None
    n = len(run.classes)
    if E.ndim != 3 or E.shape[1:] != (n, n) or E.shape[0] < 1:
        raise ValueError(f"embedding of shape {E.shape}, expected (epochs, {n}, {n})")
    if not np.all(np.isfinite(E[-1])):
        raise ValueError("embedding has non-finite values")
    return soft_targets(E[-1])


def nearest_classes(S: np.ndarray, classes: list[str], k: int = NEAREST_K) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Per class: (name, own mass S[i, i], the k other classes with the most soft-target mass S[i, j])."""
    out = []
    for i, name in enumerate(classes):
        others = sorted((j for j in range(len(classes)) if j != i), key=lambda j: (-S[i, j], j))[:k]
        out.append((name, float(S[i, i]), [(classes[j], float(S[i, j])) for j in others]))
    return out


def _norm_name(s: str) -> str:
    return " ".join(s.replace("_", " ").split()).casefold()


def heatmap_classes(classes: list[str], wanted: list[str] | None) -> tuple[list[int], str]:
    """Indices of the classes to show and a note saying which they are.

    ``wanted`` (from --classes, matched ignoring case and '_' vs ' '): those of the names this
    group has; a group with none of them keeps its default selection.
    """
    if wanted:
        index = {_norm_name(c): i for i, c in enumerate(classes)}
        idx = [index[_norm_name(w)] for w in wanted if _norm_name(w) in index]
        if idx:
            return idx, f"{len(idx)} classes chosen with --classes"
    note = "" if not wanted else " (none of --classes is a class here)"
    if len(classes) <= MAX_HEATMAP_CLASSES:
        return list(range(len(classes))), f"all {len(classes)} classes{note}"
    index = {c: i for i, c in enumerate(classes)}
    if all(c in index for c in PAPER_HEATMAP_CLASSES):
        return [index[c] for c in PAPER_HEATMAP_CLASSES], (f"the {len(PAPER_HEATMAP_CLASSES)} labels of the "
                                                           f"paper's figure, of {len(classes)} classes{note}")
    n = len(PAPER_HEATMAP_CLASSES)
    return list(range(n)), f"the first {n} of {len(classes)} classes (pick others with --classes){note}"


def check_class_names(wanted: list[str], groups: list[Group]) -> None:
    """UserError naming the --classes names that no group with a heatmap has."""
    known = {_norm_name(c): c for g in groups if g.heatmap is not None for c in g.classes}
    bad = [w for w in wanted if _norm_name(w) not in known]
    if bad:
        shown = ", ".join(list(known.values())[:12]) + (", ..." if len(known) > 12 else "")
        raise UserError(f"unknown class name(s) {', '.join(bad)} for --classes "
                        f"(known: {shown or 'none, there is no emb run with an embedding'})")


# ----------------------------------------------------------------------------- a group
@dataclass
class Group:
    """The runs of one (task, dataset) in one folder, and everything the report says about them."""

    task: str
    dataset: str
    by_mode: dict[str, list[Run]]
    stats: list[ModeStats] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    mean_soft: np.ndarray | None = None  # mean softmax(E) over the emb runs with a usable embedding
    soft_nums: list[int] = field(default_factory=list)
    heatmap: np.ndarray | None = None  # the matrix drawn (mean, or the --run one), full size
    heatmap_what: str = ""
    heatmap_idx: list[int] = field(default_factory=list)
    heatmap_note: str = ""
    heatmap_file: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.task, self.dataset

    @property
    def title(self) -> str:
        archs = sorted({r.arch for runs in self.by_mode.values() for r in runs})
        return f"{self.task} on {self.dataset} ({', '.join(archs)})"

    @property
    def metric(self) -> str:
        metrics = sorted({r.metric for runs in self.by_mode.values() for r in runs})
        words = [METRIC_WORDS.get(m, m) for m in metrics]
        return words[0] if len(words) == 1 else "MIXED: " + "; ".join(words)


def config_notes(by_mode: dict[str, list[Run]]) -> list[str]:
    """Warnings where runs of one group were trained with different settings."""
    notes = []
    all_runs = [r for runs in by_mode.values() for r in runs]
    checks = [(SHARED_KEYS, all_runs), (EMB_KEYS, [r for r in all_runs if r.mode != BASE_MODE])]
    for keys, runs in checks:
        for k in keys:
            values = sorted({json.dumps(r.config.get(k)) for r in runs})
            if len(values) > 1:
                notes.append(f"runs differ in config {k!r}: {', '.join(values)}")
    for mode, runs in by_mode.items():
        for k, default in VARIANT_KEYS.items():
            values = sorted({json.dumps(r.config.get(k, default)) for r in runs})
            if len(values) > 1:
                notes.append(f"{mode} runs differ in config {k!r}: {', '.join(values)}")
    return notes


def build_group(task: str, dataset: str, by_mode: dict[str, list[Run]], run_num: int | None,
                wanted: list[str] | None, warn: list[tuple[str, str]]) -> Group:
    """Statistics, notes and embedding matrices of one group; embedding problems go into ``warn``."""
    paper = PAPER.get((task, dataset), (None, None))[1]
    g = Group(task, dataset, by_mode, stats=summarise(by_mode, paper), notes=config_notes(by_mode))
    if len({r.metric for runs in by_mode.values() for r in runs}) > 1:
        g.notes.append("runs report different metrics; their errors are not comparable")
    emb_runs = sorted(by_mode.get(EMB_MODE, []), key=lambda r: r.num)
    if not emb_runs:
        return g
    g.classes = emb_runs[0].classes
    mats = {}
    for r in emb_runs:
        if r.classes != g.classes:
            warn.append((r.path.name, "class names differ from the group's; left out of the embedding figures"))
            continue
        try:
            mats[r.num] = load_soft_targets(r)
        except ValueError as e:
            warn.append((r.emb_path.name, f"{e}; run left out of the embedding figures"))
    if not mats:
        return g
    g.soft_nums = sorted(mats)
    g.mean_soft = np.mean([mats[n] for n in g.soft_nums], axis=0)
    if run_num is None:
        g.heatmap, g.heatmap_what = g.mean_soft, f"mean over {len(mats)} emb run(s) ({_nums(g.soft_nums)})"
    elif run_num in mats:
        g.heatmap, g.heatmap_what = mats[run_num], f"emb run #{run_num}"
    else:
        g.notes.append(f"no heatmap: this group has no usable emb run #{run_num}")
    if g.heatmap is not None:
        g.heatmap_idx, g.heatmap_note = heatmap_classes(g.classes, wanted)
    return g


def _nums(nums: list[int]) -> str:
    return ", ".join(f"#{n}" for n in nums)


# ----------------------------------------------------------------------------- text
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


# ----------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def mean_curve(curves: list[list[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """The mean test error at the epochs every run has."""
    maps = [{round(e, 6): v for e, v in c} for c in curves if c]
    if not maps:
        return [], []
    common = sorted(set.intersection(*(set(m) for m in maps)))
    return common, [float(np.mean([m[e] for m in maps])) for e in common]


def plot_curves(groups: list[Group], path: Path) -> None:
    """One panel per group: runs light and thin, the mean per mode deep and thick."""
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
        for mode in mode_order(g.by_mode):
            color = MODE_COLORS.get(mode) or next(others)
            runs = sorted(g.by_mode[mode], key=lambda r: r.num)
            for r in runs:
                if r.curve:
                    ax.plot(*zip(*r.curve), color=color, alpha=0.3, linewidth=0.7)
                    lows.append(min(v for _, v in r.curve))
            xs, ys = mean_curve([r.curve for r in runs])
            if xs:
                ax.plot(xs, ys, color=color, linewidth=2.2,
                        label=f"{MODE_NAMES.get(mode, mode)} (mean of {len(runs)})")
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


# ----------------------------------------------------------------------------- the report
@dataclass
class FolderReport:
    folder: Path
    groups: list[Group]
    skipped: list[tuple[str, str]]  # (file name, reason), runs' embedding problems included
    markdown: str = ""
    tables: str = ""  # what is printed: the tables alone
    written: list[Path] = field(default_factory=list)


def analyse_folder(folder: Path, include_dry_run: bool, run_num: int | None,
                   wanted: list[str] | None) -> FolderReport:
    """Read and summarise one folder without writing anything; UserError for bad input."""
    if not folder.exists():
        raise UserError(f"results folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give results folders such as mlp_results")
    runs, skipped, candidates = load_folder(folder, include_dry_run)
    if candidates == 0:
        raise UserError(f"no run records (*.json of format {RECORD_FORMAT}) in {folder}")
    by_group: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for r in runs:
        by_group.setdefault((r.task, r.dataset), {}).setdefault(r.mode, []).append(r)
    groups = [build_group(t, d, by_group[(t, d)], run_num, wanted, skipped) for t, d in sorted(by_group)]
    return FolderReport(folder, groups, skipped)


def write_folder(rep: FolderReport) -> None:
    """report.md, report.csv, curves.png and the heatmap(s) into the folder."""
    groups, folder = rep.groups, rep.folder
    curves = None
    if any(r.curve for g in groups for runs in g.by_mode.values() for r in runs):
        curves = "curves.png"
        plot_curves(groups, folder / curves)
        rep.written.append(folder / curves)
    with_map = [g for g in groups if g.heatmap is not None]
    for g in with_map:
        g.heatmap_file = "heatmap.png" if len(with_map) == 1 else f"heatmap_{_safe(g.task)}_{_safe(g.dataset)}.png"
        plot_heatmap(g, folder / g.heatmap_file)
        rep.written.append(folder / g.heatmap_file)
    rep.markdown = folder_markdown(folder, groups, rep.skipped, curves)
    rep.tables = "\n".join(group_table(g) for g in groups) or "No complete runs yet.\n"
    for name, text in (("report.md", rep.markdown), ("report.csv", csv_text(groups))):
        atomic_write(folder / name, text.encode())
        rep.written.append(folder / name)


def make_report(folders: list[str | Path], include_dry_run: bool = False, run_num: int | None = None,
                wanted: list[str] | None = None) -> list[FolderReport]:
    """Analyse every folder first (so bad input writes nothing), then write each folder's report.

    ``run_num``: heatmap of that emb run instead of the mean; ``wanted``: class names for the heatmap.
    """
    reports = [analyse_folder(Path(f), include_dry_run, run_num, wanted) for f in folders]
    if run_num is not None and not any(g.heatmap is not None for r in reports for g in r.groups):
        raise UserError(f"--run {run_num}: no complete emb run #{run_num} with an embedding in "
                        + ", ".join(str(f) for f in folders))
    if wanted:
        check_class_names(wanted, [g for r in reports for g in r.groups])
    for rep in reports:
        try:
            write_folder(rep)
        except OSError as e:
            raise UserError(f"cannot write the report into {rep.folder} ({e.strerror or e})") from None
    return reports


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None and on/off flags (their help says what the default does)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m labelemb.report", formatter_class=_Help,
                description="Paper-style report over results folders: tables (printed, and written as "
                            "report.md / report.csv), curves.png and heatmap(s) in each folder.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folders, e.g. mlp_results cnn_results")
    p.add_argument("--include-dry-run", action="store_true", help="count --dry-run records too (smoke checks; default: they are skipped)")
    p.add_argument("--run", type=int, default=None, metavar="NUM",
                   help="heatmap of emb run NUM instead of the mean over emb runs (default: the mean)")
    p.add_argument("--classes", default=None, metavar="A,B,C",
                   help="comma-separated class names for the heatmap(s); each group shows those it has "
                        f"(default: all classes up to {MAX_HEATMAP_CLASSES}, else the paper's "
                        f"{len(PAPER_HEATMAP_CLASSES)} CIFAR-100 labels)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "python3 -m labelemb.report"
    wanted = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    if args.classes is not None and not wanted:
        print(f"{prog}: error: --classes needs at least one class name", file=sys.stderr)
        return 2
    try:
        reports = make_report(args.dirs, args.include_dry_run, args.run, wanted)
    except UserError as e:
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    for rep in reports:
        for name, reason in rep.skipped:
            print(f"{prog}: warning: {rep.folder / name} skipped: {reason}", file=sys.stderr)
        print(f"# {rep.folder}\n\n{rep.tables}")
        print(f"written: {', '.join(str(p) for p in rep.written)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
