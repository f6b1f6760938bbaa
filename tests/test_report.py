"""The report over synthetic results folders with known numbers (no training)."""
from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from labelemb import report as rp
from labelemb.fingerprints import KNOWN

ROOT = Path(__file__).resolve().parents[1]
DIGITS = [str(i) for i in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
BASE_ERR = [1.00, 1.05, 1.10, 1.02]  # cnn/mnist baseline, reported (final) test error %
EMB_ERR = [0.90, 0.94, 0.88]
LS_ERR = [0.97, 0.99]
BASE_TPE = [4.0, 4.2, 4.4, 4.6]
EMB_TPE = [5.0, 5.5, 6.0]


def record(task: str, dataset: str, mode: str, num: int, err: float, *, classes=DIGITS, metric: str = "final",
           status: str = "complete", dry_run: bool = False, tpe: float = 1.0, epochs: int = 2) -> dict:
    """A run record as labelemb.train writes it; 5 evaluations per epoch, the last at ``err``."""
    curve = []
    points = 5 * epochs
    for i in range(1, points + 1):
        e = err + 2.0 * (points - i) / points
        curve.append({"epoch": round(i / 5, 6), "step": 110 * i, "train_acc": 0.9, "train_loss": 0.3,
                      "val_acc": (0.99 if metric == "best_val" else None), "test_acc": 1 - e / 100,
                      "test_loss": 0.1, "test_error_pct": e, "train_seconds": tpe * i / 5})
    words = {"final": "final test error", "best_val": "test error at best validation accuracy"}
    return {"format": "labelemb-run/1", "status": status, "task": task, "arch": task, "dataset": dataset,
            "mode": mode, "num": num, "seed": num, "dry_run": dry_run,
            "config": {"task": task, "arch": task, "epochs": epochs, "lr": 1e-3, "reported": metric, "mode": mode,
                       "tau": 2.0, "alpha": 0.9, "beta": 0.5, "num": num, "seed": num},
            "env": {"python": "3"}, "classes": list(classes), "steps_per_epoch": 550, "curve": curve,
            "epoch_seconds": [tpe] * epochs, "time_per_epoch": tpe, "train_seconds": tpe * epochs,
            "reported": {"metric": metric, "description": words[metric], "test_error_pct": err,
                         "epoch": float(epochs), "step": 110 * points}}


def write_run(folder: Path, rec: dict, emb: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{rec['dataset']}_{rec['arch']}_{rec['mode']}_{rec['num']}"
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(rec, indent=1))
    if emb is not None:
        np.save(folder / f"{stem}_emb.npy", emb.astype(np.float32))
    return path


def identity_emb(n: int, epochs: int = 2, scale: float = 3.0) -> np.ndarray:
    return np.stack([np.eye(n) * scale] * epochs)


def cnn_folder(folder: Path) -> Path:
    """cnn/mnist: 4 baseline, 3 emb (with embeddings), 2 'ls' runs."""
    for i, (e, t) in enumerate(zip(BASE_ERR, BASE_TPE)):
        write_run(folder, record("cnn", "mnist", "baseline", i, e, tpe=t))
    for i, (e, t) in enumerate(zip(EMB_ERR, EMB_TPE)):
        write_run(folder, record("cnn", "mnist", "emb", i, e, tpe=t), identity_emb(10, scale=2.0 + i))
    for i, e in enumerate(LS_ERR):
        write_run(folder, record("cnn", "mnist", "ls", i, e))
    return folder


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def welch_reference(a: list[float], b: list[float]) -> float:
    try:
        from scipy import stats
    except ImportError:
        return None
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


# ----------------------------------------------------------------------------- statistics
def test_welch_against_closed_form_and_scipy():
    # n = 2 each, equal variances: df = 2, and P(|T_2| >= |t|) = 1 - |t| / sqrt(t^2 + 2).
    w = rp.welch_ttest([0.0, 2.0], [1.0, 3.0])
    t = -1 / math.sqrt(2)
    assert w.t == pytest.approx(t) and w.df == pytest.approx(2.0)
    assert w.p == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-10)
    # df = 1 (one sample of 2 with all the variance): Cauchy, p = 1 - 2 atan(|t|) / pi.
    w = rp.welch_ttest([0.0, 2.0], [5.0, 5.0, 5.0])
    assert w.df == pytest.approx(1.0)
    assert w.p == pytest.approx(1 - 2 * math.atan(abs(w.t)) / math.pi, rel=1e-10)
    # Hand-checked value (scipy 1.17.1, ttest_ind(equal_var=False)).
    a, b = [10.0, 10.5, 11.0, 10.2], [9.0, 9.4, 8.8]
    assert rp.welch_ttest(a, b).p == pytest.approx(0.0046698524243115784, rel=1e-9)
    for a, b in ((BASE_ERR, EMB_ERR), (BASE_ERR, LS_ERR), ([1, 2, 3, 50], [1.1, 1.2]), ([5, 6], [5.5, 5.6, 5.4])):
        ref = welch_reference(a, b)
        if ref is not None:
            assert rp.welch_ttest(a, b).p == pytest.approx(ref, rel=1e-9)
    assert rp.welch_ttest([1.0], [2.0, 3.0]) is None  # undefined with a single run
    assert rp.welch_ttest([1.0, 1.0], [2.0, 2.0]) is None  # no variance at all


# ----------------------------------------------------------------------------- the table
def test_table_numbers(tmp_path: Path):
    folder = cnn_folder(tmp_path / "cnn_results")
    (rep,) = rp.make_report([folder])
    (g,) = rep.groups
    assert (g.task, g.dataset) == ("cnn", "mnist")
    base, emb, ls = g.stats
    assert [s.mode for s in g.stats] == ["baseline", "emb", "ls"]
    assert base.mean == pytest.approx(statistics.mean(BASE_ERR))
    assert base.std == pytest.approx(statistics.stdev(BASE_ERR))
    assert emb.std == pytest.approx(np.std(EMB_ERR, ddof=1))
    assert base.time_per_epoch == pytest.approx(np.mean(BASE_TPE))
    assert emb.time_per_epoch == pytest.approx(np.mean(EMB_TPE))
    red = statistics.mean(BASE_ERR) - statistics.mean(EMB_ERR)
    assert emb.reduction_pp == pytest.approx(red)
    assert emb.reduction_rel_pct == pytest.approx(100 * red / statistics.mean(BASE_ERR))
    assert ls.reduction_pp == pytest.approx(statistics.mean(BASE_ERR) - statistics.mean(LS_ERR))
    assert base.reduction_pp is None and base.welch is None
    # Welch's t by hand; the p-value against scipy when installed.
    v1, v2 = statistics.variance(BASE_ERR) / 4, statistics.variance(EMB_ERR) / 3
    assert emb.welch.t == pytest.approx((statistics.mean(BASE_ERR) - statistics.mean(EMB_ERR)) / math.sqrt(v1 + v2))
    assert emb.welch.df == pytest.approx((v1 + v2) ** 2 / (v1 ** 2 / 3 + v2 ** 2 / 2))
    ref = welch_reference(BASE_ERR, EMB_ERR)
    if ref is not None:
        assert emb.welch.p == pytest.approx(ref, rel=1e-9)
    assert 0 < emb.welch.p < 0.05

    md = (folder / "report.md").read_text()
    assert f"| baseline | 4 | {statistics.mean(BASE_ERR):.2f} ± {statistics.stdev(BASE_ERR):.2f} |" in md
    assert f"| LabelEmb | 3 | {statistics.mean(EMB_ERR):.2f} ± {statistics.stdev(EMB_ERR):.2f} | {red:+.2f} |" in md
    assert f"{100 * red / statistics.mean(BASE_ERR):+.1f} %" in md
    assert f"{emb.welch.p:.4f}" in md
    assert md.index("| baseline |") < md.index("| LabelEmb |") < md.index("| ls |")
    # The paper's MNIST CNN numbers beside ours.
    assert "0.85 ± 0.11" in md and "0.55 ± 0.03" in md and "4.60" in md and "5.46" in md
    assert "+0.30 (+35.3 %)" in md
    assert "final test error" in md and "best validation" not in md

    rows = list(csv.DictReader((folder / "report.csv").open()))
    assert [r["mode"] for r in rows] == ["baseline", "emb", "ls"]
    assert float(rows[0]["test_error_mean"]) == pytest.approx(statistics.mean(BASE_ERR))
    assert float(rows[1]["test_error_std"]) == pytest.approx(statistics.stdev(EMB_ERR))
    assert float(rows[1]["reduction_pp"]) == pytest.approx(red)
    assert float(rows[1]["p_welch"]) == pytest.approx(emb.welch.p)
    assert float(rows[1]["paper_test_error_mean"]) == 0.55
    assert rows[0]["reduction_pp"] == "" and rows[0]["run_nums"] == "0;1;2;3"
    assert rows[2]["paper_test_error_mean"] == ""

    # One group with an embedding: curves.png one 600 x 400 panel, heatmap.png 800 x 700.
    assert png_size(folder / "curves.png") == (600, 400)
    assert png_size(folder / "heatmap.png") == (800, 700)
    assert "![error curves](curves.png)" in md and "![heatmap](heatmap.png)" in md
    assert "## Skipped files\n\nNone." in md


def test_single_run_std_and_no_paper_number(tmp_path: Path):
    folder = tmp_path / "r"
    write_run(folder, record("mlp", "fashion-mnist", "baseline", 0, 11.0, classes=FASHION, metric="best_val"))
    write_run(folder, record("mlp", "fashion-mnist", "emb", 0, 10.0, classes=FASHION, metric="best_val"),
              identity_emb(10))
    (rep,) = rp.make_report([folder])
    base, emb = rep.groups[0].stats
    assert base.std is None and emb.welch is None
    assert emb.reduction_rel_pct == pytest.approx(100 / 11)
    md = (folder / "report.md").read_text()
    assert "| baseline | 1 | 11.00 ± – |" in md
    assert "The paper has no number for mlp on fashion-mnist" in md
    # The MLP reports the test error at the best validation accuracy, and says so.
    assert "best validation accuracy" in md and "final test error" not in md


def test_metric_wording_per_group(tmp_path: Path):
    folder = tmp_path / "r"
    write_run(folder, record("mlp", "mnist", "baseline", 0, 1.5, metric="best_val"))
    write_run(folder, record("cnn", "mnist", "baseline", 0, 0.9, metric="final"))
    (rep,) = rp.make_report([folder])
    words = {g.task: g.metric for g in rep.groups}
    assert "best validation accuracy" in words["mlp"]
    assert words["cnn"].startswith("final test error")
    # Different metrics within one group are flagged.
    write_run(folder, record("cnn", "mnist", "baseline", 1, 0.8, metric="best_val"))
    (rep,) = rp.make_report([folder])
    cnn = next(g for g in rep.groups if g.task == "cnn")
    assert cnn.metric.startswith("MIXED")
    assert any("different metrics" in n for n in cnn.notes)
    assert png_size(folder / "curves.png") == (1200, 400)  # two panels side by side


# ----------------------------------------------------------------------------- skipped files
def test_bad_files_are_skipped_and_the_rest_summarised(tmp_path: Path, capsys):
    folder = cnn_folder(tmp_path / "cnn_results")
    full = json.dumps(record("cnn", "mnist", "baseline", 7, 5.0))
    (folder / "mnist_cnn_baseline_7.json").write_text(full[: len(full) // 2])  # half-written
    write_run(folder, record("cnn", "mnist", "emb", 8, 5.0, status="running"))
    failed = record("cnn", "mnist", "emb", 9, 5.0, status="failed")
    failed["error"] = "non-finite loss at step 12"
    write_run(folder, failed)
    write_run(folder, record("cnn", "mnist", "baseline", 10, 5.0, dry_run=True))
    (folder / "notes.json").write_text('{"hello": 1}')
    (folder / "mnist_cnn_emb_2_emb.npy").write_bytes(b"\x93NUMPY garbage")  # run 2's embedding is corrupt
    copy = folder / "mnist_cnn_emb_0 (copy).json"  # a backup beside the record: the run counts once
    copy.write_bytes((folder / "mnist_cnn_emb_0.json").read_bytes())

    assert rp.main([str(folder)]) == 0
    out, err = capsys.readouterr()
    for name in ("mnist_cnn_baseline_7.json", "mnist_cnn_emb_8.json", "mnist_cnn_emb_9.json",
                 "mnist_cnn_baseline_10.json", "mnist_cnn_emb_2_emb.npy", copy.name):
        assert f"{name} skipped" in err
    assert "Traceback" not in err
    assert "| baseline | 4 |" in out and "| LabelEmb | 3 |" in out  # the rest is still summarised
    md = (folder / "report.md").read_text()
    skipped = md.split("## Skipped files")[1]
    assert "| mnist_cnn_baseline_7.json | unreadable or half-written JSON" in skipped
    assert "| mnist_cnn_emb_8.json | status 'running', not complete |" in skipped
    assert "non-finite loss at step 12" in skipped
    assert "| mnist_cnn_baseline_10.json | dry run" in skipped
    assert "| notes.json | not a labelemb-run/1 run record |" in skipped
    assert "mnist_cnn_emb_2_emb.npy" in skipped
    assert (f"| {copy.name} | the record of run mnist_cnn_emb_0 under another name: counted only as "
            "mnist_cnn_emb_0.json |") in skipped
    assert "mean over 2 emb run(s) (#0, #1)" in md  # the corrupt embedding is left out

    # --include-dry-run counts the dry-run record.
    (rep,) = rp.make_report([folder], include_dry_run=True)
    assert len(rep.groups[0].stats[0].errors) == 5


# ----------------------------------------------------------------------------- embeddings
def test_nearest_classes_of_a_hand_made_embedding(tmp_path: Path):
    E = np.eye(10) * 6.0
    E[0, 3], E[0, 1], E[0, 7] = 4.0, 3.0, 2.0  # class 0: nearest 3, then 1, then 7
    E[5, 9], E[5, 2], E[5, 8] = 1.0, 0.5, 0.25
    S = rp.soft_targets(E)
    assert np.allclose(S.sum(axis=1), 1.0)
    near = rp.nearest_classes(S, DIGITS)
    assert [c for c, _ in near[0][2]] == ["3", "1", "7"]
    assert [c for c, _ in near[5][2]] == ["9", "2", "8"]
    assert near[0][2][0][1] == pytest.approx(math.exp(4) / (math.exp(6) + math.exp(4) + math.exp(3) + math.exp(2) + 6))

    folder = tmp_path / "r"
    write_run(folder, record("cnn", "mnist", "baseline", 0, 1.0))
    write_run(folder, record("cnn", "mnist", "emb", 0, 0.9), np.stack([np.eye(10), E]))  # the last epoch counts
    write_run(folder, record("cnn", "mnist", "emb", 1, 0.8), np.stack([np.zeros((10, 10)), E]))
    (rep,) = rp.make_report([folder])
    assert np.allclose(rep.groups[0].mean_soft, S)
    md = (folder / "report.md").read_text()
    assert f"| 0 | {S[0, 0]:.3f} | 3 ({S[0, 3]:.3f}) | 1 ({S[0, 1]:.3f}) | 7 ({S[0, 7]:.3f}) |" in md
    assert f"| 5 | {S[5, 5]:.3f} | 9 ({S[5, 9]:.3f}) | 2 ({S[5, 2]:.3f}) | 8 ({S[5, 8]:.3f}) |" in md


def test_cifar100_heatmap_subset_classes_and_run(tmp_path: Path):
    classes = [f"c{i}" for i in range(100)]
    for k, name in enumerate(rp.PAPER_HEATMAP_CLASSES):
        classes[3 + 5 * k] = name
    folder = tmp_path / "100_results"
    mats = []
    for i in range(2):
        E = np.random.default_rng(i).normal(size=(100, 100))
        mats.append(rp.soft_targets(E))
        write_run(folder, record("cifar100", "cifar100", "emb", i, 24.0 + i, classes=classes),
                  np.stack([np.eye(100), E]))
    write_run(folder, record("cifar100", "cifar100", "baseline", 0, 27.0, classes=classes))
    (rep,) = rp.make_report([folder])
    g = rep.groups[0]
    assert g.heatmap_idx == [3 + 5 * k for k in range(15)]
    assert np.allclose(g.heatmap, (mats[0] + mats[1]) / 2)
    assert png_size(folder / "heatmap.png") == (800, 700)
    md = (folder / "report.md").read_text()
    assert "27.35 ± 0.40" in md and "23.97 ± 0.33" in md and "86.30" in md  # the paper's CIFAR-100 numbers
    assert md.count("| c") >= 80  # every class listed with its nearest classes

    (rep,) = rp.make_report([folder], run_num=1, wanted=["c0", "Sweet Pepper", "c1"])
    g = rep.groups[0]
    assert g.heatmap_idx == [0, classes.index("sweet_pepper"), 1]
    assert np.allclose(g.heatmap, mats[1]) and "emb run #1" in g.heatmap_what
    assert np.allclose(g.mean_soft, (mats[0] + mats[1]) / 2)  # the listing still uses the mean


# ----------------------------------------------------------------------------- bad input
def test_classes_option_across_groups(tmp_path: Path):
    folder = tmp_path / "r"
    write_run(folder, record("cnn", "mnist", "emb", 0, 0.9), identity_emb(10))
    write_run(folder, record("mlp", "fashion-mnist", "emb", 0, 10.0, classes=FASHION), identity_emb(10))
    (rep,) = rp.make_report([folder], wanted=["ankle_BOOT", "3", "trouser"])
    idx = {g.task: g.heatmap_idx for g in rep.groups}
    assert idx == {"cnn": [3], "mlp": [9, 1]}
    (rep,) = rp.make_report([folder], wanted=["Bag"])
    cnn = next(g for g in rep.groups if g.task == "cnn")
    assert cnn.heatmap_idx == list(range(10)) and "none of --classes" in cnn.heatmap_note


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys):
    folder = cnn_folder(tmp_path / "cnn_results")
    cases = [([str(tmp_path / "missing")], "does not exist"),
             ([str(tmp_path)], "no run records"),  # a folder without records
             ([str(folder / "mnist_cnn_ls_0.json")], "is not a folder"),
             ([str(folder), "--classes", "3,giraffe"], "unknown class name(s) giraffe for --classes"),
             ([str(folder), "--run", "42"], "no complete emb run #42"),
             ([str(folder), "--classes", ","], "at least one class name")]
    for argv, msg in cases:
        assert rp.main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert msg in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (folder / "report.md").exists()  # bad input writes nothing


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        rp.main(["--help"])
    assert e.value.code == 0
    assert "default" in capsys.readouterr().out


def test_cli_subprocess_two_groups(tmp_path: Path):
    folder = cnn_folder(tmp_path / "results")
    write_run(folder, record("mlp", "fashion-mnist", "baseline", 0, 11.0, classes=FASHION, metric="best_val"))
    write_run(folder, record("mlp", "fashion-mnist", "emb", 0, 10.0, classes=FASHION, metric="best_val"),
              identity_emb(10))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    p = subprocess.run([sys.executable, "-m", "labelemb.report", str(folder)],
                       env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "## cnn on mnist (cnn)" in p.stdout and "## mlp on fashion-mnist (mlp)" in p.stdout
    assert f"| baseline | 4 | {statistics.mean(BASE_ERR):.2f} ± {statistics.stdev(BASE_ERR):.2f} |" in p.stdout
    assert png_size(folder / "curves.png") == (1200, 400)
    assert png_size(folder / "heatmap_cnn_mnist.png") == (800, 700)
    assert png_size(folder / "heatmap_mlp_fashion-mnist.png") == (800, 700)
    assert not (folder / "heatmap.png").exists()
    md = (folder / "report.md").read_text()
    assert "![heatmap](heatmap_cnn_mnist.png)" in md and "![heatmap](heatmap_mlp_fashion-mnist.png)" in md
    assert len(list(csv.DictReader((folder / "report.csv").open()))) == 5
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temporary files


# ----------------------------------------------------------------------------- paired comparisons
PAIRED = {"baseline": {0: 8.0, 1: 8.3, 2: 7.9, 3: 8.4, 4: 8.1},
          "emb": {0: 7.5, 1: 7.9, 2: 7.6, 3: 7.7, 6: 7.0},  # run 4 missing, run 6 extra: 4 pairs with baseline
          "ls": {0: 7.8, 1: 8.0, 2: 7.7, 3: 8.2, 4: 7.9}}


def _paired_by_hand(a: dict, b: dict):
    """(pairs, unpaired, mean of b - a, 95% CI, two-sided p) from the formulas, not from ttest_rel."""
    from scipy.stats import t as student_t

    shared = sorted(set(a) & set(b))
    d = [b[i] - a[i] for i in shared]
    n, mean, sd = len(d), statistics.mean(d), statistics.stdev(d)
    se = sd / math.sqrt(n)
    half = student_t.ppf(0.975, n - 1) * se
    p = 2 * student_t.sf(abs(mean / se), n - 1)
    return n, len(set(a) ^ set(b)), mean, (mean - half, mean + half), p


def test_paired_differences_interval_and_p_for_every_pair_of_modes(tmp_path: Path):
    folder = tmp_path / "r"
    for mode, errs in PAIRED.items():
        for num, e in errs.items():
            write_run(folder, record("cifar10", "cifar10", mode, num, e))
    (rep,) = rp.make_report([folder])
    g = rep.groups[0]
    assert [(c.a, c.b) for c in g.pairs] == [("baseline", "emb"), ("baseline", "ls"), ("emb", "ls")]
    rows = {(r["mode_a"], r["mode_b"]): r for r in csv.DictReader((folder / "comparisons.csv").open())}
    md = (folder / "report.md").read_text()
    for c in g.pairs:
        n, unpaired, mean, ci, p = _paired_by_hand(PAIRED[c.a], PAIRED[c.b])
        assert (c.pairs, c.unpaired) == (n, unpaired)
        assert c.mean_diff == pytest.approx(mean) and c.ci == pytest.approx(ci) and c.p == pytest.approx(p, rel=1e-9)
        assert c.welch.p == pytest.approx(welch_reference(list(PAIRED[c.a].values()), list(PAIRED[c.b].values())))
        r = rows[(c.a, c.b)]
        assert int(r["pairs"]) == n and int(r["unpaired"]) == unpaired and float(r["ci_level"]) == 0.95
        assert float(r["mean_diff_b_minus_a"]) == pytest.approx(mean) and float(r["p_paired"]) == pytest.approx(p)
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(ci)
    emb_vs_base = g.pairs[0]
    assert (emb_vs_base.pairs, emb_vs_base.unpaired) == (4, 2)  # runs 4 (baseline) and 6 (emb) left out
    assert f"| LabelEmb vs baseline | 4 | 2 | {emb_vs_base.mean_diff:+.3f} | [{emb_vs_base.ci[0]:+.3f}, " in md
    assert "| ls vs LabelEmb | 4 | 2 |" in md and "### Comparisons: cifar10 on cifar10" in md


def test_paired_test_without_enough_pairs():
    c = rp.paired_ttest({0: 1.0, 1: 2.0}, {1: 1.5, 2: 3.0})  # one shared run
    assert (c.pairs, c.unpaired, c.mean_diff, c.ci, c.p) == (1, 2, -0.5, None, None)
    c = rp.paired_ttest({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5})  # the same difference every time: no spread
    assert c.mean_diff == pytest.approx(0.5) and c.ci is None and c.p is None
    c = rp.paired_ttest({0: 1.0}, {5: 1.0})
    assert (c.pairs, c.unpaired, c.mean_diff) == (0, 2, None)


def test_lowest_test_error_column_only_where_the_final_error_is_reported(tmp_path: Path):
    folder = tmp_path / "r"
    for num, (err, dip_at) in enumerate([(8.0, 3), (8.2, 5), (8.4, 3)]):
        rec = record("cnn", "fashion-mnist", "baseline", num, err)
        rec["curve"][dip_at]["test_error_pct"] = err - 1.0  # lower than the final error
        write_run(folder, rec)
    write_run(folder, record("mlp", "fashion-mnist", "baseline", 0, 11.0, classes=FASHION, metric="best_val"))
    (rep,) = rp.make_report([folder])
    cnn, mlp = (next(g for g in rep.groups if g.task == t) for t in ("cnn", "mlp"))
    best = cnn.stats[0].best_test
    assert best.mean == pytest.approx(statistics.mean([7.0, 7.2, 7.4]))
    assert best.std == pytest.approx(statistics.stdev([7.0, 7.2, 7.4]))
    assert (best.epoch_median, best.epoch_range) == (0.8, (0.8, 1.2))  # points 4, 6, 4 of 5 per epoch
    assert cnn.reports_final and not mlp.reports_final
    md = (folder / "report.md").read_text()
    cnn_part, mlp_part = md.split("## mlp on fashion-mnist")
    assert "selected on the test set" in cnn_part and "7.20 ± 0.20 at epoch 0.8 (0.8–1.2)" in cnn_part
    assert "selected on the test set" not in mlp_part.split("## Figures")[0]
    rows = {r["task"]: r for r in csv.DictReader((folder / "report.csv").open())}
    assert float(rows["cnn"]["best_test_error_mean"]) == pytest.approx(7.2) and rows["mlp"]["best_test_error_mean"] == ""


# ----------------------------------------------------------------------------- against the paper
def _welch_interval_by_hand(m1, s1, n1, m2, s2, n2):
    v1, v2 = s1 ** 2 / n1, s2 ** 2 / n2
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    se = math.sqrt(v1 + v2)
    d = m1 - m2
    half = student_t.ppf(0.975, df) * se
    return d, (d - half, d + half), 2 * student_t.sf(abs(d / se), df), v1 + v2, df


def test_against_the_paper_rows_by_hand(tmp_path: Path):
    folder = cnn_folder(tmp_path / "r")  # cnn/mnist: baseline runs 0-3, emb runs 0-2
    (rep,) = rp.make_report([folder])
    g = rep.groups[0]
    rows = {r["row"]: r for r in csv.DictReader((folder / "against_paper.csv").open())}
    assert list(rows) == ["baseline", "emb", "reduction"]
    for mode, errs, (pm, ps) in (("baseline", BASE_ERR, (0.85, 0.11)), ("emb", EMB_ERR, (0.55, 0.03))):
        d, ci, p, _, _ = _welch_interval_by_hand(statistics.mean(errs), statistics.stdev(errs), len(errs), pm, ps, 20)
        r = rows[mode]
        assert float(r["diff_ours_minus_paper"]) == pytest.approx(d)
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx(ci)
        assert float(r["p_welch"]) == pytest.approx(p, rel=1e-9)
        assert (int(r["ours_runs"]), int(r["paper_runs"])) == (len(errs), 20)
    # the reduction: paired over runs 0-2 against the paper's 0.85 - 0.55 from its two summaries
    d = np.array(EMB_ERR) - np.array(BASE_ERR[:3])
    red, vo, dfo = -d.mean(), d.var(ddof=1) / 3, 2
    _, paper_ci, _, vp, dfp = _welch_interval_by_hand(0.85, 0.11, 20, 0.55, 0.03, 20)
    df = (vo + vp) ** 2 / (vo ** 2 / dfo + vp ** 2 / dfp)
    diff, half = red - 0.30, student_t.ppf(0.975, df) * math.sqrt(vo + vp)
    r = rows["reduction"]
    assert float(r["ours_mean"]) == pytest.approx(red) and float(r["paper_mean"]) == pytest.approx(0.30)
    half_o = student_t.ppf(0.975, dfo) * math.sqrt(vo)
    assert (float(r["ours_ci_low"]), float(r["ours_ci_high"])) == pytest.approx((red - half_o, red + half_o))
    assert (float(r["paper_ci_low"]), float(r["paper_ci_high"])) == pytest.approx(paper_ci)
    assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((diff - half, diff + half))
    assert float(r["p_welch"]) == pytest.approx(2 * student_t.sf(abs(diff) / math.sqrt(vo + vp), df))
    # the sentences follow the intervals
    for a in g.against_paper:
        covers = a.ci[0] <= 0 <= a.ci[1]
        assert rows[a.what]["verdict"].startswith("Reproduced" if covers else "Not reproduced")
    assert rows["baseline"]["verdict"] == \
        "Not reproduced, on only 4 runs: our baseline error is higher than the paper's."
    md = (folder / "report.md").read_text()
    assert "### Against the paper: cnn on mnist (cnn), MNIST, CNN" in md
    assert "These runs do not record which data they read" in md  # synthetic records carry no fingerprint


def test_verdict_wording():
    from labelemb.report.stats import AgainstPaper, Summary
    from labelemb.report.text import verdict

    s = Summary(1.0, 0.1, 20)
    assert verdict(AgainstPaper("emb", s, s, 0.1, (-0.1, 0.3), 0.5)) == \
        "Reproduced: our LabelEmb error agrees with the paper's."
    assert verdict(AgainstPaper("emb", s, s, -0.2, (-0.3, -0.1), 0.01)) == \
        "Not reproduced: our LabelEmb error is lower than the paper's."
    assert verdict(AgainstPaper("reduction", s, s, -0.2, (-0.3, -0.1), 0.01)) == \
        "Not reproduced: our reduction is smaller than the paper's."
    assert verdict(AgainstPaper("baseline", s, s, 0.0, None, None)).startswith("Not decided")
    few = Summary(1.0, 0.1, 4)  # either verdict on fewer than 5 runs (pairs) says on how few
    assert verdict(AgainstPaper("reduction", few, s, -0.2, (-0.3, -0.1), 0.01)) == \
        "Not reproduced, on only 4 pairs: our reduction is smaller than the paper's."
    assert verdict(AgainstPaper("emb", few, s, 0.1, (-0.1, 0.3), 0.5)) == \
        "Reproduced, on only 4 runs: our LabelEmb error agrees with the paper's."


def test_the_cells_against_the_paper_count_runs_and_pairs_in_good_english():
    from labelemb.report.stats import AgainstPaper, Summary
    from labelemb.report.text import _paper_cells

    paper = Summary(0.3, 0.1, 20)
    for n, words in ((1, "(1 pair)"), (3, "(3 pairs)")):
        assert _paper_cells(AgainstPaper("reduction", Summary(0.2, None, n), paper, -0.1, None, None))[2].endswith(words)
    for n, words in ((1, "(1 run)"), (2, "(2 runs)")):
        assert _paper_cells(AgainstPaper("emb", Summary(0.5, None, n), paper, 0.2, None, None))[2].endswith(words)


def test_no_paper_section_without_a_paper_number(tmp_path: Path):
    folder = tmp_path / "r"
    write_run(folder, record("mlp", "mnist", "baseline", 0, 1.5, metric="best_val"))
    write_run(folder, record("mlp", "mnist", "baseline", 1, 1.6, metric="best_val"))
    (rep,) = rp.make_report([folder])
    assert rep.groups[0].against_paper == [] and not (folder / "against_paper.csv").exists()
    assert "Against the paper" not in (folder / "report.md").read_text()


OFFICIAL_MNIST = {"folder": "/x", "sha256": dict(KNOWN["MNIST (the official files)"])}


def test_data_is_named_and_mixing_is_warned(tmp_path: Path):
    folder = tmp_path / "r"
    other = {"folder": "/y", "sha256": {k: "0" * 64 for k in OFFICIAL_MNIST["sha256"]}}
    for num, data in enumerate([OFFICIAL_MNIST, OFFICIAL_MNIST, other]):
        write_run(folder, {**record("cnn", "mnist", "baseline", num, 1.0 + num / 10), "data": data})
    (rep,) = rp.make_report([folder])
    g = rep.groups[0]
    assert g.data == "MIXED"
    assert any(n.startswith("runs saw different data: MNIST (the official files): 2 run(s) (baseline); "
                            "not a dataset this suite knows") for n in g.notes)
    md = (folder / "report.md").read_text()
    assert "Data: MIXED." in md and "- note: runs saw different data" in md
    assert g.data_match == "mixed"  # the paper's row is warned of the mixing, not told the runs read other data
    assert "**These runs saw different data**" in md and "did not read" not in md


def test_official_data_named_and_a_mislabelled_dataset_warned(tmp_path: Path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for num in range(2):
        write_run(good, {**record("cnn", "mnist", "baseline", num, 1.0 + num / 10), "data": OFFICIAL_MNIST})
        write_run(bad, {**record("cnn", "mnist", "baseline", num, 1.0 + num / 10),
                        "data": {"folder": "/f", "sha256": {"train-images-idx3-ubyte": "ab" * 32}}})
    g_good, g_bad = (rp.make_report([f])[0].groups[0] for f in (good, bad))
    assert g_good.data == "MNIST (the official files)" and g_good.notes == []
    assert "Data: MNIST (the official files)." in (good / "report.md").read_text()
    assert "did not read" not in (good / "report.md").read_text()
    assert (g_good.data_match, g_bad.data_match) == ("official", "other")
    assert "**These runs did not read MNIST (the official files)**" in (bad / "report.md").read_text()
    assert any("the records name the dataset 'mnist' but the files are not MNIST (the official files)" in n
               for n in g_bad.notes)


def test_the_paper_row_warns_of_partly_unrecorded_and_of_unverifiable_data(tmp_path: Path):
    part, cifar, mixed = tmp_path / "part", tmp_path / "cifar", tmp_path / "mixed"
    for num in range(2):
        write_run(part, {**record("cnn", "mnist", "baseline", num, 1.0), **({"data": OFFICIAL_MNIST} if num else {})})
        write_run(cifar, {**record("cifar10", "cifar10", "baseline", num, 7.0 + num),
                          "data": {"folder": "/c", "sha256": {"data_batch_1": "cd" * 32}}})
        write_run(mixed, {**record("cifar10", "cifar10", "baseline", num, 7.0 + num),
                          "data": {"folder": "/c", "sha256": {"data_batch_1": str(num) * 64}}})
    g_part, g_cifar, g_mixed = (rp.make_report([f])[0].groups[0] for f in (part, cifar, mixed))
    assert (g_part.data_match, g_cifar.data_match, g_mixed.data_match) == ("partial", "unverified", "mixed")
    assert "**Some of these runs do not record which data they read**" in (part / "report.md").read_text()
    md = (cifar / "report.md").read_text()
    assert "### Against the paper" in md and "this suite knows no checksums of the official cifar10" in md
    assert "**These runs saw different data**" in (mixed / "report.md").read_text()  # no known checksums either


def test_the_paper_row_warns_of_runs_not_trained_with_the_recipe(tmp_path: Path):
    from labelemb.config import RECIPES

    good, short = tmp_path / "good", tmp_path / "short"
    for mode, err in (("baseline", 0.7), ("emb", 0.55)):
        for num in range(2):
            rec = {**record("cnn", "mnist", mode, num, err + num / 100, epochs=15), "data": OFFICIAL_MNIST}
            rec["config"] = RECIPES["cnn"].config(mode=mode, num=num, seed=num).to_dict()  # as cnn.py writes it
            write_run(good, rec)
            if mode == "emb":  # quick emb runs beside the recipe's baseline
                rec = {**rec, "config": {**rec["config"], "epochs": 1, "batch_size": 20}}
            write_run(short, rec)
    g_good, g_short = (rp.make_report([f])[0].groups[0] for f in (good, short))
    assert g_good.off_recipe == [] and "trained with the recipe" not in (good / "report.md").read_text()
    assert g_short.off_recipe == ["emb: epochs 1 (the recipe: 15)", "emb: batch_size 20 (the recipe: 100)"]
    assert ("**These runs were not all trained with the recipe** (SPEC §2, the script's defaults): emb: epochs 1 "
            "(the recipe: 15); emb: batch_size 20") in (short / "report.md").read_text()
    rows = list(csv.DictReader((short / "against_paper.csv").open()))
    assert len(rows) == 3 and {r["data_match"] for r in rows} == {"official"}
    assert {r["off_recipe"] for r in rows} == {"emb: epochs 1 (the recipe: 15); emb: batch_size 20 (the recipe: 100)"}


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy's, in the reference (one sample equal)
def test_welch_is_undefined_when_neither_mode_has_spread_up_to_float_noise():
    a, b = [0.7] * 3, [0.71] * 3
    assert 0 < np.var(a, ddof=1) < 1e-30  # float noise: an exact test for zero variance would give p ~ 1e-29
    assert rp.welch_ttest(a, b) is None
    spread = [0.71, 0.75, 0.80]  # one sample without spread beside one with: defined
    assert rp.welch_ttest(a, spread).p == pytest.approx(welch_reference(a, spread), rel=1e-9)


def test_runs_given_other_seeds_are_not_paired(tmp_path: Path):
    folder = tmp_path / "r"
    for num, (b, e) in enumerate([(1.0, 0.9), (1.1, 0.95), (1.2, 0.8)]):
        write_run(folder, record("cnn", "mnist", "baseline", num, b))
        rec = record("cnn", "mnist", "emb", num, e)
        if num == 2:  # trained with another --seed: other weights and batches than baseline run 2
            rec["seed"] = rec["config"]["seed"] = 102
        write_run(folder, rec)
    (rep,) = rp.make_report([folder])
    (c,) = rep.groups[0].pairs
    assert (c.pairs, c.unpaired) == (2, 2) and c.mean_diff == pytest.approx(-0.125)
    assert c.welch.p == pytest.approx(welch_reference([1.0, 1.1, 1.2], [0.9, 0.95, 0.8]))  # every run


def test_equal_paired_differences_and_no_shared_index_give_no_interval_and_say_why():
    from labelemb.report.stats import Summary, paired_ttest, reduction_against_paper
    from labelemb.report.text import _paper_cells, verdict

    base, emb = {0: 0.71, 1: 0.82, 2: 0.93}, {0: 0.54, 1: 0.65, 2: 0.76}  # differences equal but for float noise
    d = np.array(list(emb.values())) - np.array(list(base.values()))
    assert 0 < np.std(d, ddof=1) < 1e-15  # what an exact test for no spread would miss
    pair = paired_ttest(base, emb)
    assert pair.pairs == 3 and pair.ci is None and pair.p is None and pair.mean_diff == pytest.approx(-0.17)
    paper_b, paper_e = Summary(0.85, 0.11, 20), Summary(0.55, 0.03, 20)
    a = reduction_against_paper(list(base.values()), list(emb.values()), pair, paper_b, paper_e)
    assert a.ci is None and verdict(a) == "Not decided: the paired differences are all equal (no spread, no interval)."
    apart = paired_ttest({0: 0.7, 1: 0.8}, {2: 0.5, 3: 0.6})
    a = reduction_against_paper([0.7, 0.8], [0.5, 0.6], apart, paper_b, paper_e)
    assert a.ours.mean == pytest.approx(0.2) and _paper_cells(a)[2] == "+0.20 – (unpaired means)"
    assert verdict(a).startswith("Not decided: no run index (and seed) both modes have")


def test_a_reproduced_verdict_on_few_runs_says_how_few():
    from labelemb.report.stats import AgainstPaper, Summary
    from labelemb.report.text import verdict

    paper = Summary(0.85, 0.11, 20)
    assert verdict(AgainstPaper("baseline", Summary(0.76, 0.08, 2), paper, -0.09, (-0.47, 0.30), 0.34)) == \
        "Reproduced, on only 2 runs: our baseline error agrees with the paper's."
    assert verdict(AgainstPaper("reduction", Summary(0.2, None, 3), paper, -0.1, (-0.3, 0.1), 0.3)) == \
        "Reproduced, on only 3 pairs: our reduction agrees with the paper's."
    assert verdict(AgainstPaper("baseline", Summary(0.8, 0.1, 5), paper, -0.05, (-0.2, 0.1), 0.4)) == \
        "Reproduced: our baseline error agrees with the paper's."


def test_the_reports_own_files_of_an_earlier_layout_are_removed_and_nothing_else(tmp_path: Path):
    folder = cnn_folder(tmp_path / "r")  # cnn/mnist with a paper row and a heatmap
    write_run(folder, record("mlp", "mnist", "emb", 0, 1.5, metric="best_val"), identity_emb(10))  # a 2nd heatmap
    rp.make_report([folder])
    assert {p.name for p in folder.glob("heatmap*.png")} == {"heatmap_cnn_mnist.png", "heatmap_mlp_mnist.png"}
    (folder / "heatmap_mine.png").write_bytes(b"\x89PNG\r\n\x1a\n not the report's")  # a user's file
    (folder / "heatmap_kept.png").write_bytes((folder / "heatmap_cnn_mnist.png").read_bytes())  # a marked copy
    (rep,) = rp.make_report([folder], run_num=2)  # only cnn has emb run 2: the default report's files stay
    assert rep.removed == [] and (folder / "heatmap_mlp_mnist.png").is_file()
    for p in folder.glob("mnist_cnn_*.json"):  # the cnn runs go: no paper row, one heatmap
        p.unlink()
    (rep,) = rp.make_report([folder])
    left = {p.name for p in folder.iterdir()}
    assert {"heatmap.png", "heatmap_mine.png", "heatmap_kept.png"} <= left
    assert not {"heatmap_cnn_mnist.png", "heatmap_mlp_mnist.png", "paper_curves_cnn_mnist.png",
                "against_paper.csv"} & left
    assert sorted(p.name for p in rep.removed) == ["against_paper.csv", "heatmap_cnn_mnist.png",
                                                   "heatmap_mlp_mnist.png", "paper_curves_cnn_mnist.png"]


def test_the_papers_figure_of_its_row_draws_baseline_and_labelemb_only(tmp_path: Path):
    folder = cnn_folder(tmp_path / "r")  # cnn/mnist: baseline, emb and ls runs
    write_run(folder, record("mlp", "mnist", "baseline", 0, 1.5, metric="best_val"))  # no paper row
    (rep,) = rp.make_report([folder])
    assert sorted(p.name for p in folder.glob("paper_curves_*.png")) == ["paper_curves_cnn_mnist.png"]
    assert png_size(folder / "paper_curves_cnn_mnist.png") == (600, 400)
    assert "![paper figure](paper_curves_cnn_mnist.png)" in (folder / "report.md").read_text()
    import matplotlib.pyplot as plt

    drawn = []
    real = plt.Axes.plot

    def spy(ax, *args, **kw):
        drawn.append(kw.get("label"))
        return real(ax, *args, **kw)

    plt.Axes.plot = spy
    try:
        rp.figures.plot_curves([g for g in rep.groups if g.task == "cnn"], tmp_path / "x.png", only=("baseline", "emb"))
    finally:
        plt.Axes.plot = real
    assert [d for d in drawn if d] == ["baseline (mean of 4)", "LabelEmb (mean of 3)"]  # no ls


def test_records_without_a_fingerprint_are_counted_not_taken_for_other_data(tmp_path: Path):
    folder = tmp_path / "r"
    for num in range(3):
        rec = record("cnn", "mnist", "baseline", num, 1.0 + num / 10)
        write_run(folder, {**rec, "data": OFFICIAL_MNIST} if num else rec)  # run 0: an older record
    (rep,) = rp.make_report([folder])
    g = rep.groups[0]
    assert g.data == "MNIST (the official files) (1 run(s) unrecorded)"
    assert g.notes == ["1 of 3 runs do not record which data they read (written before records carried a fingerprint)"]
    assert "did not read" not in (folder / "report.md").read_text()


def test_run_numbers_are_written_as_ranges():
    # 20 runs listed one by one no longer fit the heatmap's title
    from labelemb.report.groups import _nums
    assert _nums(list(range(20))) == "#0-#19"
    assert _nums([9, 0, 1, 3, 5, 6, 7]) == "#0, #1, #3, #5-#7, #9"
    assert _nums([4]) == "#4" and _nums([]) == ""


def test_a_reduction_of_one_pair_is_that_pairs_not_the_unpaired_means():
    from labelemb.report.stats import Summary, paired_ttest, reduction_against_paper
    base, emb = {0: 0.71, 1: 0.82}, {0: 0.54}
    pair = paired_ttest(base, emb)
    a = reduction_against_paper(list(base.values()), list(emb.values()), pair, Summary(0.85, 0.11, 20),
                                Summary(0.55, 0.03, 20))
    assert a.ours.n == 1 and math.isclose(a.ours.mean, 0.71 - 0.54) and a.ci is None
