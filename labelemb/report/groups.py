"""One (task, dataset) group of a folder's runs and everything the report says about it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..config import VARIANT_KEYS, Config
from ..errors import UserError
from .embeddings import _norm_name, heatmap_classes, load_soft_targets
from .paper import METRIC_WORDS, PAPER
from .records import BASE_MODE, EMB_MODE, Run
from .stats import ModeStats, Paired, compare_modes, summarise

# Config keys that should agree between runs of one group (tau/alpha/beta: between non-baseline runs).
SHARED_KEYS = ("arch", "lr", "lr_decay_every", "lr_decay", "epochs", "batch_size", "evals_per_epoch",
               "drop_last", "val_size", "reported")
EMB_KEYS = ("tau", "alpha", "beta")


@dataclass
class Group:
    """The runs of one (task, dataset) in one folder, and everything the report says about them."""

    task: str
    dataset: str
    by_mode: dict[str, list[Run]]
    stats: list[ModeStats] = field(default_factory=list)
    pairs: list[Paired] = field(default_factory=list)  # every mode against every other
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
    def reports_final(self) -> bool:
        """Whether every run reports its final test error (CIFAR, CNN): then the lowest test error over
        the evaluation points is shown beside it, as a secondary reading selected on the test set."""
        return {r.metric for runs in self.by_mode.values() for r in runs} == {"final"}

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
        for k in VARIANT_KEYS:  # a record written before a setting existed: what the older code ran with
            values = sorted({json.dumps(Config.saved_setting(r.config, k)) for r in runs})
            if len(values) > 1:
                notes.append(f"{mode} runs differ in config {k!r}: {', '.join(values)}")
    return notes


def build_group(task: str, dataset: str, by_mode: dict[str, list[Run]], run_num: int | None,
                wanted: list[str] | None, warn: list[tuple[str, str]]) -> Group:
    """Statistics, notes and embedding matrices of one group; embedding problems go into ``warn``."""
    paper = PAPER.get((task, dataset), (None, None))[1]
    g = Group(task, dataset, by_mode, stats=summarise(by_mode, paper), pairs=compare_modes(by_mode),
              notes=config_notes(by_mode))
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


def check_class_names(wanted: list[str], groups: list[Group]) -> None:
    """UserError naming the --classes names that no group with a heatmap has."""
    known = {_norm_name(c): c for g in groups if g.heatmap is not None for c in g.classes}
    bad = [w for w in wanted if _norm_name(w) not in known]
    if bad:
        shown = ", ".join(list(known.values())[:12]) + (", ..." if len(known) > 12 else "")
        raise UserError(f"unknown class name(s) {', '.join(bad)} for --classes "
                        f"(known: {shown or 'none, there is no emb run with an embedding'})")
