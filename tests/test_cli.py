"""Bad input and protected files: one-line errors with exit code 2, nothing written or lost."""
from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import FASHION, make_cifar, make_mnist, run_script


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}



@pytest.fixture
def tiny(tmp_path):
    return make_mnist(tmp_path / "mnist"), tmp_path / "results"


BAD = [
    (["--mode", "soft"], "invalid choice: 'soft'"),
    (["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
    (["--tau", "0"], "--tau must be > 0"),
    (["--tau", "-1"], "--tau must be > 0"),
    (["--alpha", "0"], "--alpha must be in (0, 1]"),
    (["--alpha", "1.5"], "--alpha must be in (0, 1]"),
    (["--beta", "-0.1"], "--beta must be in [0, 1]"),
    (["--beta", "2"], "--beta must be in [0, 1]"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--epochs", "two"], "invalid int value: 'two'"),
    (["--val-size", "0"], "--val-size 0 leaves no validation set"),  # mlp.py reports at the best validation point
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_flag_one_line_exit_2_nothing_written(argv, message, tiny, capsys):
    data, out = tiny
    before = _snapshot(data.parent)
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(out), *argv, capsys=capsys)
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1 and message in r.stderr and "error" in r.stderr
    assert _snapshot(data.parent) == before and not out.exists()


def test_cuda_without_cuda(tiny, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data, out = tiny
    r = run_script("mlp.py", "--data", str(data), "--device", "cuda", "--results-dir", str(out), capsys=capsys)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and not out.exists()


def test_missing_dataset_without_network(tmp_path, capsys):
    empty, out = tmp_path / "nothing_here", tmp_path / "results"
    r = run_script("mlp.py", "--data", str(empty), "--results-dir", str(out), capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "mnist" in r.stderr and "--data" in r.stderr
    assert not out.exists() and not empty.exists()


def _corrupt_cases(tmp_path: Path):
    """(script, data folder, text the message must contain) for wrong or truncated files."""
    magic = make_mnist(tmp_path / "magic")
    p = magic / "train-labels-idx1-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + raw[4:]))
    yield "mlp.py", magic, "train-labels-idx1-ubyte.gz has IDX magic number 0x00000803, expected 0x00000801"

    trunc = make_mnist(tmp_path / "trunc")
    p = trunc / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-100]))
    yield "mlp.py", trunc, "t10k-images-idx3-ubyte.gz holds"

    badgz = make_mnist(tmp_path / "badgz")
    p = badgz / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:50])
    yield "mlp.py", badgz, "cannot read"

    keys = make_cifar(tmp_path / "keys", "cifar10", n_per_batch=4, n_test=4)
    p = keys / "cifar-10-batches-py" / "data_batch_2"
    p.write_bytes(pickle.dumps({b"images": b"", b"labels": []}))
    yield "cifar10.py", keys, "data_batch_2 lacks the key(s) data"

    notpickle = make_cifar(tmp_path / "notpickle", "cifar10", n_per_batch=4, n_test=4)
    (notpickle / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage" * 10)
    yield "cifar10.py", notpickle, "test_batch as a CIFAR python batch"


def test_corrupt_dataset_files_named_in_one_line(tmp_path, capsys):
    for script, data, needle in _corrupt_cases(tmp_path):
        out = tmp_path / f"results_{data.name}"
        extra = ["--val-size", "20"] if script == "mlp.py" else []
        r = run_script(script, "--data", str(data), "--results-dir", str(out), *extra, capsys=capsys)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.splitlines()) == 1 and needle in r.stderr, r.stderr
        assert not out.exists()


def test_unwritable_results_folder(tiny, tmp_path, capsys):
    data, _ = tiny
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_script("mlp.py", "--data", str(data), "--results-dir", str(blocker / "sub"), capsys=capsys)
    assert r.returncode == 2 and "cannot write results" in r.stderr and "--results-dir" in r.stderr
    assert blocker.read_text() == "x"


def test_error_is_one_line_without_traceback_from_the_shell(tmp_path):
    r = run_script("cnn.py", "--alpha", "3", "--results-dir", str(tmp_path / "r"))
    assert r.returncode == 2 and r.stderr.strip() == \
        "cnn.py: error: --alpha must be in (0, 1], got 3.0; the paper uses 0.9"


# --------------------------------------------------------------------------- protected runs
def _dry(data, out, *extra):
    return ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--dry-run", "--quiet", *extra]


def test_finished_run_is_protected(tiny, capsys):
    data, out = tiny
    assert run_script("mlp.py", *_dry(data, out), capsys=capsys).returncode == 0
    before = _snapshot(out)
    r = run_script("mlp.py", *_dry(data, out), capsys=capsys)
    assert r.returncode == 2 and "already holds the finished run 0" in r.stderr and "--overwrite" in r.stderr
    assert _snapshot(out) == before
    assert run_script("mlp.py", *_dry(data, out, "--overwrite"), capsys=capsys).returncode == 0


def test_resume_without_checkpoint(tiny, capsys):
    data, out = tiny
    r = run_script("mlp.py", *_dry(data, out, "--resume"), capsys=capsys)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and not out.exists()


def test_resume_with_other_recipe_lists_keys(tiny, capsys):
    data, out = tiny
    args = ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--quiet", "--epochs", "2"]
    assert run_script("mlp.py", *args, capsys=capsys).returncode == 0
    rec = out / "mnist_mlp_emb_0.json"
    record = json.loads(rec.read_text())
    record["status"] = "interrupted"  # pretend it stopped after epoch 2 of a longer run
    rec.write_text(json.dumps(record))
    before = _snapshot(out)
    r = run_script("mlp.py", *args, "--resume", "--beta", "0.3", "--batch-size", "50", capsys=capsys)
    assert r.returncode == 2 and "different recipe" in r.stderr
    assert "beta (checkpoint 0.5, now 0.3)" in r.stderr and "batch_size (checkpoint 100, now 50)" in r.stderr
    assert _snapshot(out) == before


def test_corrupt_checkpoint_offers_previous(tiny, capsys):
    data, out = tiny
    args = ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--quiet", "--epochs", "2"]
    assert run_script("mlp.py", *args, capsys=capsys).returncode == 0
    ckpt = out / "mnist_mlp_emb_0.ckpt"
    prev = out / "mnist_mlp_emb_0.ckpt.prev"
    good = ckpt.read_bytes()
    prev.write_bytes(good)
    ckpt.write_bytes(good[: len(good) // 2])  # a write cut short
    rec = out / "mnist_mlp_emb_0.json"
    rec.write_text(rec.read_text().replace('"complete"', '"interrupted"'))
    r = run_script("mlp.py", *args, "--resume", "--epochs", "2", capsys=capsys)
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr and "--resume previous" in r.stderr
    r = run_script("mlp.py", *args, "--resume", "previous", capsys=capsys)
    assert r.returncode == 0, r.stderr


def test_unfinished_run_is_not_restarted_by_accident(tiny, capsys):
    data, out = tiny
    args = ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--quiet"]
    assert run_script("mlp.py", *args, "--epochs", "1", capsys=capsys).returncode == 0
    rec = out / "mnist_mlp_emb_0.json"
    rec.write_text(rec.read_text().replace('"complete"', '"interrupted"'))
    r = run_script("mlp.py", *args, "--epochs", "1", capsys=capsys)
    assert r.returncode == 2 and "holds an unfinished run 0" in r.stderr and "--resume" in r.stderr


def test_non_finite_loss_marks_record_failed(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m", n_train=520), tmp_path / "r"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(out),
                     "--quiet", "--epochs", "2", "--lr", "1e30", capsys=capsys)
    assert r.returncode == 1 and "non-finite loss at step" in r.stderr and "epoch 1" in r.stderr
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    assert rec["status"] == "failed" and "non-finite" in rec["error"]
    assert not (out / "mnist_mlp_emb_0.ckpt").exists()  # no checkpoint of a diverged model


def test_offline_first_run_beside_the_projects_mnist_names_it(tmp_path, capsys, monkeypatch):
    # README's main command from a checkout beside ../shared/data/mnist (SPEC §4), without network:
    # the hint is the same recipe on that MNIST, not another dataset
    from labelemb import data as data_mod
    from labelemb.errors import DatasetMissing

    def offline(root, name, why, find):
        raise DatasetMissing(f"{why}, and downloading it failed (no network in this test)")

    monkeypatch.setattr(data_mod, "_download", offline)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    make_mnist(tmp_path / "shared" / "data" / "mnist", n_train=220)  # 200 to train on at --val-size 20
    monkeypatch.chdir(checkout)
    r = run_script("mlp.py", "--mode=emb", capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and not (checkout / "data").exists()
    suggested = r.stderr.split("this runs now: ")[1].split()
    assert suggested == ["python3", "mlp.py", "--mode=emb", "--data", "../shared/data/mnist", "--results-dir",
                         "my_results"]
    r = run_script("mlp.py", *suggested[2:], "--val-size", "20", "--dry-run", capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads((checkout / "my_results" / "mnist_mlp_emb_0.json").read_text())["status"] == "complete"
    # that folder given and not usable (here: incomplete): no hint to the command that just failed
    (tmp_path / "shared" / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    r = run_script("mlp.py", "--data", "../shared/data/mnist", capsys=capsys)
    assert r.returncode == 2 and "incomplete" in r.stderr
    assert "--data ../shared/data/mnist --results-dir" not in r.stderr


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs apt-get install -y dataset-fashion-mnist")
def test_offline_first_run_names_the_command_that_works(tmp_path, capsys, monkeypatch):
    # README's main command on a machine without network: one line, naming a command that runs here
    monkeypatch.chdir(tmp_path)
    r = run_script("mlp.py", "--mode=emb", capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and not (tmp_path / "data").exists()
    suggested = r.stderr.split("this runs now: ")[1].split()
    assert suggested[:2] == ["python3", "mlp.py"] and "--dataset" in suggested
    r = run_script("mlp.py", *suggested[2:], "--dry-run", capsys=capsys)  # the same command, three steps of it
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "my_results" / "fashion-mnist_mlp_emb_0.json").read_text())["status"] == "complete"
