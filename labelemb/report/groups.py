"""One (task, dataset) group of a folder's runs and everything the report says about it."""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field

import numpy as np

from .. import modes as table
from ..config import RECIPES, VARIANT_KEYS, Config
from ..errors import UserError
from .embeddings import _norm_name, heatmap_classes, load_soft_targets
from ..fingerprints import EXPECTED, describe, identify
from .paper import METRIC_WORDS, PAPER, PAPER_RUNS
from .records import BASE_MODE, EMB_MODE, Run
from .stats import (AgainstPaper, ModeStats, Paired, Summary, compare_modes, mode_against_paper,
                    reduction_against_paper, summarise)

# Config keys that should agree between runs of one group; the runs of one mode should also agree in
# the opt-in variants and in the mode's own settings (labelemb.modes).
SHARED_KEYS = ("arch", "lr", "lr_decay_every", "lr_decay", "epochs", "batch_size", "evals_per_epoch",
               "drop_last", "val_size", "reported")


@dataclass
class Group:
    """The runs of one (task, dataset) in one folder, and everything the report says about them."""

    task: str
    dataset: str
    by_mode: dict[str, list[Run]]
    stats: list[ModeStats] = field(default_factory=list)
    pairs: list[Paired] = field(default_factory=list)  # every mode against every other
    against_paper: list[AgainstPaper] = field(default_factory=list)  # where SPEC §3 has the task
    data: str = ""  # which data the runs saw (labelemb.fingerprints.describe), or that they differ
    # against the dataset the records name: official; partial (official, some runs unrecorded); other; mixed;
    # unrecorded; unverified (one fingerprint, but no official checksums known for the dataset)
    data_match: str = ""
    # where the paper's modes were not trained with the script's recipe (SPEC §2), one phrase per setting
    off_recipe: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    mean_soft: np.ndarray | None = None  # mean softmax(E) over the emb runs with a usable embedding
    soft_nums: list[int] = field(default_factory=list)
    heatmap: np.ndarray | None = None  # the matrix drawn (mean, or the --run one), full size
    heatmap_what: str = ""
    heatmap_idx: list[int] = field(default_factory=list)
    heatmap_note: str = ""
    heatmap_file: str | None = None
    paper_figure: str | None = None  # the error curves of baseline and LabelEmb alone, as the paper draws them

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
    for k in SHARED_KEYS:
        values = sorted({json.dumps(r.config.get(k)) for r in all_runs})
        if len(values) > 1:
            notes.append(f"runs differ in config {k!r}: {', '.join(values)}")
    for mode, runs in by_mode.items():
        own = [s.name for s in table.MODES[mode].settings] if mode in table.MODES else []
        for k in (*VARIANT_KEYS, *own):  # a record written before a setting existed: what the older code ran with
            values = sorted({json.dumps(Config.saved_setting(r.config, k)) for r in runs})
            if len(values) > 1:
                notes.append(f"{mode} runs differ in config {k!r}: {', '.join(values)}")
    return notes


def recipe_notes(task: str, by_mode: dict[str, list[Run]]) -> list[str]:
    """Where the runs of the paper's modes were not trained with the recipe of the task's script (SPEC
    §2: what the comparison with the paper assumes): each setting that differs, with the values."""
    notes = []
    for mode in (BASE_MODE, EMB_MODE):
        runs = by_mode.get(mode, [])
        if not runs or task not in RECIPES:
            continue
        recipe = RECIPES[task].config(mode=mode)
        own = [s.name for s in table.MODES[mode].settings]
        for k in (*SHARED_KEYS, "dry_run", *VARIANT_KEYS, *own):
            want = getattr(recipe, k)
            saved = [Config.saved_setting(r.config, k) for r in runs]
            if isinstance(want, bool):  # a flag that older records hold as null reads as off
                saved = [bool(v) for v in saved]
            seen = {"unrecorded" if v is MISSING else json.dumps(v) for v in saved}
            if seen != {json.dumps(want)}:
                notes.append(f"{mode}: {k} {', '.join(sorted(seen))} (the recipe: {json.dumps(want)})")
    return notes


def data_notes(dataset: str, by_mode: dict[str, list[Run]]) -> tuple[str, list[str], str]:
    """Which data the group's runs saw (one phrase), warnings where the records show they differ or
    that it is not the official dataset they name, and the verdict (see Group.data_match). Records
    written before they carried a fingerprint say nothing either way: they are counted, not taken
    for other data."""
    runs = [r for rs in by_mode.values() for r in rs]
    seen: dict[str, list[Run]] = {}
    unrecorded = []
    for r in runs:
        fp = r.data.get("sha256") if isinstance(r.data, dict) else None
        if isinstance(fp, dict):
            seen.setdefault(json.dumps(fp, sort_keys=True), []).append(r)
        else:
            unrecorded.append(r)
    notes = []
    if unrecorded and seen:
        notes.append(f"{len(unrecorded)} of {len(runs)} runs do not record which data they read (written before "
                     "records carried a fingerprint)")
    if len(seen) > 1:
        parts = [f"{describe(rs[0].data)}: {len(rs)} run(s) ({', '.join(sorted({r.mode for r in rs}))})"
                 for rs in sorted(seen.values(), key=lambda rs: (-len(rs), describe(rs[0].data)))]
        return "MIXED", notes + ["runs saw different data: " + "; ".join(parts)], "mixed"
    if not seen:
        return describe(None), notes, "unrecorded"
    first = next(iter(seen.values()))[0].data
    expected = EXPECTED.get(dataset)
    official = identify(first["sha256"]) == expected if expected else None  # None: no checksums known
    match = ("other" if official is False else "partial" if unrecorded else
             "official" if official else "unverified")
    if match == "other":
        notes.append(f"the records name the dataset {dataset!r} but the files are not {expected}: {describe(first)}")
    return describe(first) + (f" ({len(unrecorded)} run(s) unrecorded)" if unrecorded else ""), notes, match


def paper_rows(g: "Group", paper: dict) -> list[AgainstPaper]:
    """Our baseline and emb against the paper's, and our reduction against the paper's."""
    mine = {s.mode: s for s in g.stats}
    out = []
    for mode in (BASE_MODE, EMB_MODE):
        if mode in mine and mode in paper:
            s = mine[mode]
            out.append(mode_against_paper(mode, Summary(s.mean, s.std, len(s.errors)),
                                          Summary(paper[mode][0], paper[mode][1], PAPER_RUNS)))
    pair = next((c for c in g.pairs if (c.a, c.b) == (BASE_MODE, EMB_MODE)), None)
    if pair is not None and BASE_MODE in paper and EMB_MODE in paper:
        out.append(reduction_against_paper(
            mine[BASE_MODE].errors, mine[EMB_MODE].errors, pair,
            *(Summary(paper[m][0], paper[m][1], PAPER_RUNS) for m in (BASE_MODE, EMB_MODE))))
    return out


def build_group(task: str, dataset: str, by_mode: dict[str, list[Run]], run_num: int | None,
                wanted: list[str] | None, warn: list[tuple[str, str]]) -> Group:
    """Statistics, notes and embedding matrices of one group; embedding problems go into ``warn``."""
    paper = PAPER.get((task, dataset), (None, None))[1]
    g = Group(task, dataset, by_mode, stats=summarise(by_mode, paper), pairs=compare_modes(by_mode),
              notes=config_notes(by_mode))
    g.data, notes, g.data_match = data_notes(dataset, by_mode)
    g.notes += notes
    if paper:
        g.against_paper = paper_rows(g, paper)
        g.off_recipe = recipe_notes(task, by_mode)
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
    """Run numbers as ranges ("#0-#4, #7"), short enough for a figure's title."""
    spans: list[list[int]] = []
    for n in sorted(nums):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"#{a}" if a == b else f"#{a}, #{b}" if b == a + 1 else f"#{a}-#{b}" for a, b in spans)


def check_class_names(wanted: list[str], groups: list[Group]) -> None:
    """UserError naming the --classes names that no group with a heatmap has."""
    known = {_norm_name(c): c for g in groups if g.heatmap is not None for c in g.classes}
    bad = [w for w in wanted if _norm_name(w) not in known]
    if bad:
        shown = ", ".join(list(known.values())[:12]) + (", ..." if len(known) > 12 else "")
        raise UserError(f"unknown class name(s) {', '.join(bad)} for --classes "
                        f"(known: {shown or 'none, there is no emb run with an embedding'})")
