"""A report per results folder: read and summarise everything first, then write."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import RECIPES
from ..errors import UserError
from ..results import RECORD_FORMAT, atomic_write
from .figures import REPORT_MARK, plot_curves, plot_heatmap, _safe
from .groups import Group, build_group, check_class_names
from .records import BASE_MODE, EMB_MODE, Run, load_folder
from .text import MD_HEAD, comparisons_csv, csv_text, folder_markdown, group_sections, paper_csv


@dataclass
class FolderReport:
    folder: Path
    groups: list[Group]
    skipped: list[tuple[str, str]]  # (file name, reason), runs' embedding problems included
    curves: str | None = None  # the curves figure's file name; None without curves
    files: list[str] = field(default_factory=list)  # every file the report will write, planned once
    markdown: str = ""
    tables: str = ""  # what is printed: the tables alone
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # the report's own files of an earlier layout


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
    curves, files = plan_files(groups)
    return FolderReport(folder, groups, skipped, curves, files)


def _group_file(kind: str, task: str, dataset: str) -> str:
    """The name of a group's own figure: heatmap_<task>_<dataset>.png, paper_curves_<task>_<dataset>.png."""
    return f"{kind}_{_safe(task)}_{_safe(dataset)}.png"


def plan_files(groups: list[Group]) -> tuple[str | None, list[str]]:
    """The names of the curves figure (None without curves) and of every file the report will write;
    sets each group's heatmap and paper figure file names."""
    curves = "curves.png" if any(r.curve for g in groups for runs in g.by_mode.values() for r in runs) else None
    with_map = [g for g in groups if g.heatmap is not None]
    for g in with_map:
        g.heatmap_file = "heatmap.png" if len(with_map) == 1 else _group_file("heatmap", g.task, g.dataset)
    for g in groups:  # the paper's figure of its row: baseline and LabelEmb only
        g.paper_figure = _group_file("paper_curves", g.task, g.dataset) if g.against_paper and curves else None
    names = [curves] if curves else []
    names += [g.paper_figure for g in groups if g.paper_figure]
    names += [g.heatmap_file for g in with_map] + ["report.md", "report.csv", "comparisons.csv"]
    if any(g.against_paper for g in groups):
        names.append("against_paper.csv")
    return curves, names


def check_ours(folder: Path, names: list[str]) -> None:
    """UserError unless every file of ``names`` that exists in ``folder`` is one this report wrote."""
    report_md = folder / "report.md"
    md_is_ours = report_md.is_file() and written_by_report(report_md)
    for name in names:
        path = folder / name
        if path.exists() and not (written_by_report(path) or (md_is_ours and path.suffix == ".png")):
            raise UserError(f"{path} exists and was not written by labelemb-report; it is left alone and no report "
                            f"is written into {folder}: move that file away, or report a folder of run records")


def written_by_report(path: Path) -> bool:
    """Whether ``path`` is a file of this report's (its first bytes say so; PNGs carry REPORT_MARK).
    PNGs of older reports, without the mark, count where the folder's report.md is ours."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if path.suffix == ".md":
        return head.startswith(MD_HEAD.encode())
    if path.suffix == ".csv":
        return head.startswith(b"task,dataset,")
    return path.suffix == ".png" and REPORT_MARK.encode() in head


def write_folder(rep: FolderReport) -> None:
    """report.md, report.csv, comparisons.csv, curves.png and the heatmap(s) into the folder."""
    groups, folder, curves = rep.groups, rep.folder, rep.curves  # make_report checked rep.files are ours
    if curves:
        plot_curves(groups, folder / curves)
        rep.written.append(folder / curves)
    for g in groups:
        if g.paper_figure:
            plot_curves([g], folder / g.paper_figure, only=(BASE_MODE, EMB_MODE))
            rep.written.append(folder / g.paper_figure)
    for g in groups:
        if g.heatmap_file:
            plot_heatmap(g, folder / g.heatmap_file)
            rep.written.append(folder / g.heatmap_file)
    rep.markdown = folder_markdown(folder, groups, rep.skipped, curves)
    rep.tables = "\n".join("\n".join(group_sections(g)) for g in groups) or "No complete runs yet.\n"
    texts = {"report.md": rep.markdown, "report.csv": csv_text(groups), "comparisons.csv": comparisons_csv(groups),
             "against_paper.csv": paper_csv(groups)}
    for name in (n for n in rep.files if n in texts):
        atomic_write(folder / name, texts[name].encode())
        rep.written.append(folder / name)


def own_optional_names() -> set[str]:
    """Every name of a file the report writes only sometimes, for any task and dataset: a file of one of
    these names, with the report's mark, is the report's own (a renamed copy is not)."""
    names = {"curves.png", "heatmap.png", "against_paper.csv"}
    for task, recipe in RECIPES.items():
        for dataset in recipe.datasets:
            names |= {_group_file("heatmap", task, dataset), _group_file("paper_curves", task, dataset)}
    return names


def remove_stale(rep: FolderReport) -> None:
    """Remove the report's own files that this report does not write (a heatmap.png of one group before
    a second group came, an against_paper.csv of runs now gone), so none is taken for current output.
    Only names the report gives its files, carrying its mark; a report of one --run or of --classes
    leaves the default report's files alone."""
    for name in sorted(own_optional_names() - set(rep.files)):
        path = rep.folder / name
        if path.is_file() and written_by_report(path):
            path.unlink()
            rep.removed.append(path)


def make_report(folders: list[str | Path], include_dry_run: bool = False, run_num: int | None = None,
                wanted: list[str] | None = None) -> list[FolderReport]:
    """Analyse every folder first (so bad input writes nothing), then write each folder's report.

    ``run_num``: heatmap of that emb run instead of the mean; ``wanted``: class names for the heatmap.
    """
    reports = [analyse_folder(Path(f), include_dry_run, run_num, wanted) for f in folders]
    for rep in reports:  # before anything is written anywhere
        check_ours(rep.folder, rep.files)
    if run_num is not None and not any(g.heatmap is not None for r in reports for g in r.groups):
        raise UserError(f"--run {run_num}: no complete emb run #{run_num} with an embedding in "
                        + ", ".join(str(f) for f in folders))
    if wanted:
        check_class_names(wanted, [g for r in reports for g in r.groups])
    for rep in reports:
        try:
            write_folder(rep)
            if run_num is None and not wanted:
                remove_stale(rep)
        except OSError as e:
            raise UserError(f"cannot write the report into {rep.folder} ({e.strerror or e})") from None
    return reports
