"""The four entry scripts end to end, on tiny files in the real formats, as a user runs them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from conftest import DEVICES, FASHION, ROOT, make_cifar, make_mnist, run_script

SCRIPTS = {  # script -> (dataset kind, extra flags that keep the step tiny)
    "mlp.py": ("mnist", ["--val-size", "20"]),
    "cnn.py": ("mnist", ["--val-size", "20"]),
    "cifar10.py": ("cifar10", ["--batch-size", "2"]),  # a wide ResNet-18 step on CPU costs seconds per image
    "cifar100.py": ("cifar100", ["--batch-size", "2"]),
}


def _data(kind: str, tmp: Path) -> Path:
    if kind == "mnist":
        return make_mnist(tmp / "mnist")
    return make_cifar(tmp / kind, kind, n_per_batch=8, n_test=4)


def _files(results: Path) -> list[str]:
    return sorted(p.name for p in results.iterdir())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["baseline", "emb"])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_dry_run_writes_record_curve_plot(script, mode, device, tmp_path, capsys, monkeypatch):
    from labelemb import train

    monkeypatch.setattr(train, "DRY_RUN_STEPS", 1)  # one step of the wide ResNet-18 is seconds on a CPU
    kind, extra = SCRIPTS[script]
    data = _data(kind, tmp_path)
    out = tmp_path / "results"
    r = run_script(script, f"--mode={mode}", "--data", str(data), "--results-dir", str(out), "--dry-run",
                   "--num", "3", "--device", device, *extra, capsys=capsys)  # in-process: the shell is tested below
    assert r.returncode == 0, r.stderr
    dataset = "mnist" if kind == "mnist" else kind
    arch = {"mlp.py": "mlp", "cnn.py": "cnn", "cifar10.py": "resnet8", "cifar100.py": "resnet18"}[script]
    stem = f"{dataset}_{arch}_{mode}_3"
    expected = {f"{stem}.json", f"{stem}.csv", f"{stem}.png", f"{stem}.ckpt"}
    if mode == "emb":
        expected.add(f"{stem}_emb.npy")
    assert set(_files(out)) == expected
    rec = json.loads((out / f"{stem}.json").read_text())
    assert rec["status"] == "complete" and rec["mode"] == mode and rec["num"] == 3 and rec["dry_run"]
    assert rec["seed"] == 3 and rec["env"]["torch"]
    assert rec["env"]["torchvision"] == metadata.version("torchvision")  # as pip has it, without importing it
    assert rec["config"].get("tau") == (2.0 if mode == "emb" else None)  # a setting of emb only
    assert rec["env"]["device"].startswith(device) and rec["env"]["precision"] == "fp32"  # strict fp32 by default
    assert rec["config"]["bn_init"] == ("uniform" if kind.startswith("cifar") else None)
    if device == "cuda":
        assert rec["env"]["tf32_allowed"] == {"matmul": False, "conv": False}
    row = rec["curve"][-1]
    assert row["epoch"] == 1.0 and 0 <= row["test_acc"] <= 1 and np.isfinite(row["test_loss"])
    assert (row["val_acc"] is not None) == (kind == "mnist")
    assert rec["reported"]["metric"] == ("best_val" if script == "mlp.py" else "final")
    csv_lines = (out / f"{stem}.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,step,train_acc") and len(csv_lines) == 1 + len(rec["curve"])
    assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if mode == "emb":
        emb = np.load(out / f"{stem}_emb.npy")
        n = 10 if kind != "cifar100" else 100
        assert emb.shape == (1, n, n)
    assert stem in r.stdout


def test_recipe_defaults_in_help(capsys):
    for script, needle in [("cifar100.py", "(default: 100)"), ("mlp.py", "(default: 15)"),
                           ("cifar100.py", "(default: 128)"), ("cnn.py", "(default: 100)")]:
        r = run_script(script, "--help", capsys=capsys)
        assert r.returncode == 0 and needle in r.stdout.replace("\n", " ")
    r = run_script("cifar100.py", "--help", capsys=capsys)
    assert "100_results" in r.stdout and "--val-size" not in r.stdout
    r = subprocess.run([sys.executable, str(ROOT / "mlp.py"), "--help"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)  # once as a user runs it
    assert r.returncode == 0 and "(default: 15)" in r.stdout


def test_runs_sweep_skips_finished(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "mnist"), tmp_path / "r"
    args = ("--data", str(data), "--val-size", "20", "--results-dir", str(out), "--dry-run", "--quiet",
            "--runs", "3", "--num", "5")
    r = run_script("mlp.py", *args, capsys=capsys)
    assert r.returncode == 0, r.stderr
    recs = sorted(out.glob("*.json"))
    assert [p.name for p in recs] == [f"mnist_mlp_emb_{i}.json" for i in (5, 6, 7)]
    assert [json.loads(p.read_text())["seed"] for p in recs] == [5, 6, 7]
    before = {p: p.stat().st_mtime_ns for p in recs}
    r = run_script("mlp.py", *args, capsys=capsys)
    assert r.returncode == 0 and r.stdout.count("skipped") == 3
    assert {p: p.stat().st_mtime_ns for p in recs} == before


def test_a_runs_sweep_skips_only_the_same_run(tmp_path, capsys):
    # a finished run of other settings or data is not this run: no "skipped" with its error, and kept as it is
    data, other, out = make_mnist(tmp_path / "mnist"), make_mnist(tmp_path / "other", seed=1), tmp_path / "r"
    common = ("--val-size", "20", "--results-dir", str(out), "--quiet")
    r = run_script("mlp.py", "--data", str(data), *common, "--dry-run", capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = out / "mnist_mlp_emb_0.json"
    snapshot = lambda: {p: p.read_bytes() for p in out.rglob('*') if p.is_file()}  # noqa: E731
    before = snapshot()
    r = run_script("mlp.py", "--data", str(data), *common, "--epochs", "2", "--runs", "1", capsys=capsys)
    assert r.returncode == 1 and "skipped" not in r.stdout
    assert (f"{rec} holds a finished run 0 with other settings: epochs 1 (now 2), dry_run True (now False); "
            f"use another --results-dir, or train that run again: python3 mlp.py --mode emb --num 0 --results-dir "
            f"{out} --overwrite (with this sweep's other flags)") in r.stderr
    r = run_script("mlp.py", "--data", str(other), *common, "--dry-run", "--runs", "1", capsys=capsys)
    assert r.returncode == 1 and f"other settings: the data of {data} (now {other}, other files)" in r.stderr
    assert snapshot() == before
    r = run_script("mlp.py", "--data", str(data), *common, "--dry-run", "--runs", "1", capsys=capsys)
    assert r.returncode == 0 and "mnist_mlp_emb_0: already complete, skipped" in r.stdout


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs apt-get install -y dataset-fashion-mnist")
def test_fashion_mnist_mlp_one_epoch(tmp_path, capsys):
    mode = "emb"  # the real files end to end and a run that learns; the modes' numbers: mlp_results/
    r = run_script("mlp.py", f"--mode={mode}", "--dataset", "fashion-mnist", "--epochs", "1", "--quiet",
                   "--results-dir", str(tmp_path), capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / f"fashion-mnist_mlp_{mode}_0.json").read_text())
    assert rec["steps_per_epoch"] == 550 and len(rec["curve"]) == 5  # 5 evaluations per epoch
    assert [row["step"] for row in rec["curve"]] == [110, 220, 330, 440, 550]
    assert rec["classes"][0] == "T-shirt/top"
    assert rec["reported"]["test_error_pct"] < 18.0  # about 14 after one epoch; chance is 90


# --------------------------------------------------------------------------- interrupt and resume
def _mlp_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--batch-size", "5",
            "--epochs", "2", "--quiet", *extra]


TIMING = {"train_seconds", "time_per_epoch", "epoch_seconds"}


def _comparable(rec: dict) -> dict:
    rec = {k: v for k, v in rec.items() if k not in TIMING | {"config", "env"}}
    rec["curve"] = [{k: v for k, v in row.items() if k != "train_seconds"} for row in rec["curve"]]
    return rec


@pytest.mark.parametrize("device", DEVICES)
def test_sigterm_mid_epoch_then_resume_equals_uninterrupted(device, tmp_path, capsys, one_thread):
    # the interrupted run is a process of its own; the reference and the resume run here, at its one thread
    data = make_mnist(tmp_path / "mnist", n_train=2020)  # 400 steps of 5 per epoch
    ref, out = tmp_path / "ref", tmp_path / "out"
    r = run_script("mlp.py", *_mlp_args(data, ref, "--device", device), capsys=capsys)
    assert r.returncode == 0, r.stderr

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "mlp.py"), *_mlp_args(data, out, "--device", device)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "mnist_mlp_emb_0.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)  # the first checkpoint is written at the end of epoch 1
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    assert rec["status"] == "interrupted"
    import torch
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] > 0, "the interrupt should land inside an epoch"

    r = run_script("mlp.py", *_mlp_args(data, out, "--device", device, "--resume"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    a = json.loads((ref / "mnist_mlp_emb_0.json").read_text())
    b = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    ea, eb = np.load(ref / "mnist_mlp_emb_0_emb.npy"), np.load(out / "mnist_mlp_emb_0_emb.npy")
    if device == "cpu":  # bitwise: same thread count, same kernels
        assert _comparable(a) == _comparable(b)
        assert np.array_equal(ea, eb)
    else:  # same batches and draws, but CUDA atomics (index_add_ of E's gradient) sum in any order
        assert [row["step"] for row in a["curve"]] == [row["step"] for row in b["curve"]]
        for ra, rb in zip(a["curve"], b["curve"], strict=True):
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
            assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-4)
            assert abs(rb["test_acc"] - ra["test_acc"]) <= 2 / 40 + 1e-9  # at most two of 40 test images flip
        assert np.allclose(ea, eb, atol=1e-4)


def test_second_sigint_exits_at_once_leaving_valid_files(tmp_path):
    data = make_mnist(tmp_path / "mnist", n_train=2020)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "mlp.py"), *_mlp_args(data, out, "--epochs", "50")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "mnist_mlp_emb_0.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())  # valid JSON, whatever its status
    assert rec["status"] in ("running", "interrupted")
    ckpt = out / "mnist_mlp_emb_0.ckpt"
    if ckpt.exists():  # any checkpoint present is whole
        import torch
        assert "model" in torch.load(ckpt, weights_only=False)
