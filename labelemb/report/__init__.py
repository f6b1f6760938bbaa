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
validation accuracy; the report says which. Where the metric is the final test error (CIFAR,
CNN), a secondary column gives each run's lowest test error over its evaluation points and where
it happened, labelled as selected on the test set. Then every mode against every other: run i
of every mode shares its seed (initial weights, batches), so the pair is compared run by run over
the indices both have (with the same seed: a run given another ``--seed`` is unpaired): the mean
paired difference with its 95% confidence interval and the paired t-test (scipy.stats), beside
Welch's unpaired test; unpaired runs are left out and counted.
Where the paper has the task (SPEC §3), ours against the paper's: each mode's mean − the paper's
with the Welch interval and test from the summary statistics, and our paired reduction
(baseline − emb) beside the paper's, with a plain sentence per row: reproduced (the interval of
the difference covers 0) or not, and in which direction. Each group says which data its runs
read (the records' sha256 fingerprints, :mod:`labelemb.fingerprints`) and warns when the runs it
pools saw different data, or when a record's dataset name is not matched by its files.

Written into each folder (atomically), describing only that folder's records:

- ``report.md``  the tables, the metric, figure links, each class's nearest classes under the
                 learned embedding, and the skipped files;
- ``report.csv`` one row per task/dataset/mode with the numbers (full precision);
- ``comparisons.csv`` one row per task/dataset and pair of modes (paired difference, interval, p-values);
- ``against_paper.csv`` where SPEC §3 has the task: ours against the paper's baseline, LabelEmb and
                 reduction (difference, 95% interval, Welch's test from the summaries, a verdict);
- ``curves.png`` test error vs epoch, one panel (600 x 400 px) per task/dataset group, up to three
                 panels per row: every run a light thin curve, the mean a thick one (baseline
                 blue, LabelEmb red, other modes other colours);
- ``paper_curves_<task>_<dataset>.png`` where the paper has the task: the same panel with baseline
                 (blue) and LabelEmb (red) alone, as the paper's figure draws them;
- ``heatmap.png`` (800 x 700 px) the soft targets softmax(E) after the last epoch, mean over the
                 emb runs (or run ``--run NUM``), grey scale 0..1. When a folder holds emb runs
                 of more than one task/dataset group there is one heatmap per group, named
                 ``heatmap_<task>_<dataset>.png`` instead. Groups of more than 20 classes show a
                 subset: the 15 CIFAR-100 labels of the paper's figure. ``--classes a,b,c``
                 picks the classes (case and '_' vs ' ' ignored): each group shows those of the
                 names it has (a group with none keeps its default); a name that no group has
                 is an error.

Modules: ``records`` (reading run records), ``stats`` (scipy.stats), ``embeddings`` (soft targets,
nearest classes), ``groups``, ``text`` (Markdown, CSV), ``figures``, ``folders`` (read all, then
write), ``cli``.

The nearest-class listing always uses the mean soft-target matrix over the group's emb runs.
The Markdown tables are also printed to stdout. Bad input (a missing folder, a folder without
any run record, unknown class names, a ``--run`` no group has) is one line on stderr, exit 2.
"""
from .cli import build_parser, main
from .embeddings import nearest_classes, soft_targets
from .folders import FolderReport, make_report
from .groups import config_notes
from .paper import PAPER, PAPER_HEATMAP_CLASSES
from .stats import compare_modes, paired_ttest, welch_ttest

__all__ = ["build_parser", "main", "make_report", "FolderReport", "config_notes", "nearest_classes", "soft_targets",
           "welch_ttest", "paired_ttest", "compare_modes", "PAPER", "PAPER_HEATMAP_CLASSES"]
