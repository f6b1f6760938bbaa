"""Reading run records: the complete runs of a results folder, and why the rest were skipped."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import modes as table
from ..config import run_stem
from ..results import RECORD_FORMAT

BASE_MODE = table.with_role("reference").name  # what every mode is compared to (the baseline)
EMB_MODE = table.with_role("method").name  # the paper's method (LabelEmb)


def mode_label(mode: str) -> str:
    """How the report names a mode: its declared label, or its name for a mode not in the table."""
    return table.MODES[mode].label if mode in table.MODES else mode


def mode_order(modes) -> list[str]:
    """The table's order (the reference first, the paper's method second, then the rivals), then any
    mode not in the table alphabetically."""
    rank = {m: i for i, m in enumerate(table.MODES)}  # the table lists them in that order
    return sorted(modes, key=lambda m: (rank.get(m, len(rank)), m))


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
    data: dict | None = None  # the record's data: folder and sha256 of its files (None in older records)

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
               device=device, data=rec.get("data") if isinstance(rec.get("data"), dict) else None)


def load_folder(folder: Path, include_dry_run: bool) -> tuple[list[Run], list[tuple[str, str]], int]:
    """(counted runs, skipped (file name, reason), number of run records, complete or not)."""
    runs, skipped, candidates = [], [], 0
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:  # listed, but not counted as a record: it may be any JSON file
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
            run = parse_run(path, rec)
        except (ValueError, TypeError, KeyError) as e:
            skipped.append((path.name, f"malformed record: {_one_line(e)}"))
            continue
        own = run_stem(run.dataset, run.arch, run.mode, run.num) + ".json"
        if path.name != own:  # a copy (a backup, "... (copy).json") would count the run twice
            skipped.append((path.name, f"the record of run {own[:-5]} under another name: counted only as {own}"))
            continue
        runs.append(run)
    return runs, skipped, candidates


def _one_line(x) -> str:
    return " ".join(str(x).split())
