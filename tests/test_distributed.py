"""torchrun with 2 CPU processes (gloo): one run, one record, the same numbers as one process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, make_cifar, make_mnist, run_script


def test_two_processes_match_one(tmp_path, capsys):
    # 203 training images in batches of 20: the last batch (3) is split 2/1, shards differ in size.
    # LabelEmb: both heads, E and its gradient (baseline's one head: test_distributed_options' ols run)
    mode = "emb"
    data = make_mnist(tmp_path / "mnist", n_train=223, n_test=60)
    common = ["--data", str(data), "--val-size", "20", "--batch-size", "20", "--epochs", "2", "--quiet",
              f"--mode={mode}", "--tensorboard"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run_script("cnn.py", *common, "--results-dir", str(one), capsys=capsys)
    assert r1.returncode == 0, r1.stderr
    r2 = run_script("cnn.py", *common, "--results-dir", str(two), nproc=2)
    assert r2.returncode == 0, r2.stderr[-3000:]
    stem = f"mnist_cnn_{mode}_0"
    # only rank 0 writes: exactly one record, one checkpoint
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert r2.stdout.count("final test error") == 1  # one process speaks
    assert len(list((two / f"mnist_cnn_{mode}_0_tensorboard").glob("events.out.tfevents.*"))) == 1  # one writes
    a = json.loads((one / f"{stem}.json").read_text())
    b = json.loads((two / f"{stem}.json").read_text())
    assert b["config"]["world_size"] == 2 and b["config"]["batch_size"] == 20
    assert len(a["curve"]) == len(b["curve"])
    # Same batches, same augmentation draws, loss scaled so DDP's average is the one-process gradient:
    # only the order of floating-point sums differs (seen: relative 1e-7), so the curves agree closely.
    for ra, rb in zip(a["curve"], b["curve"]):
        assert ra["step"] == rb["step"]
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-5)
        assert abs(rb["test_acc"] - ra["test_acc"]) <= 1 / 60 + 1e-9  # at most one test image flips
        assert abs(rb["train_acc"] - ra["train_acc"]) <= 1 / 200 + 1e-9
    ea, eb = np.load(one / f"{stem}_emb.npy"), np.load(two / f"{stem}_emb.npy")
    assert np.allclose(ea, eb, atol=1e-4)


def test_resnet_dry_run_under_torchrun(tmp_path):
    # BatchNorm and both heads under DDP (baseline's one head: test_distributed_options' ols run)
    data = make_cifar(tmp_path / "c", "cifar10", n_per_batch=8, n_test=8)
    out = tmp_path / "r"
    r = run_script("cifar10.py", "--data", str(data), "--dry-run", "--batch-size", "4", "--quiet",
                   "--mode=emb", "--results-dir", str(out), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"cifar10_resnet8_emb_0{s}" for s in
                                                           (".ckpt", ".csv", ".json", ".png", "_emb.npy"))


def test_sigterm_and_resume_under_torchrun(tmp_path):
    data = make_mnist(tmp_path / "mnist", n_train=1020)  # 100 steps of 10 per epoch
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = ["--data", str(data), "--val-size", "20", "--batch-size", "10", "--quiet", "--epochs", "3"]
    r = run_script("mlp.py", *common, "--results-dir", str(ref), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(ROOT / "mlp.py"), *common, "--results-dir", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "mnist_mlp_emb_0.ckpt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert json.loads((out / "mnist_mlp_emb_0.json").read_text())["status"] == "interrupted"

    r = run_script("mlp.py", *common, "--results-dir", str(out), "--resume", nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((ref / "mnist_mlp_emb_0.json").read_text())
    b = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    strip = lambda c: [{k: v for k, v in row.items() if k != "train_seconds"} for row in c]  # noqa: E731
    assert b["status"] == "complete" and strip(a["curve"]) == strip(b["curve"])


def test_one_process_under_torchrun_takes_the_ddp_path(tmp_path, capsys):
    # torchrun with one process still makes a process group (gloo here, NCCL on a GPU) and wraps the
    # model in DDP; the run is the plain run's, up to the order of floating-point sums
    data = make_mnist(tmp_path / "mnist", n_train=223, n_test=60)
    common = ["--data", str(data), "--val-size", "20", "--batch-size", "20", "--epochs", "1", "--quiet"]
    plain, ddp = tmp_path / "plain", tmp_path / "ddp"
    assert run_script("mlp.py", *common, "--results-dir", str(plain), capsys=capsys).returncode == 0
    r = run_script("mlp.py", *common, "--results-dir", str(ddp), nproc=1)
    assert r.returncode == 0, r.stderr[-3000:]
    a = json.loads((plain / "mnist_mlp_emb_0.json").read_text())
    b = json.loads((ddp / "mnist_mlp_emb_0.json").read_text())
    assert "distributed" not in a["env"] and b["env"]["distributed"] == {"backend": "gloo", "world_size": 1}
    for ra, rb in zip(a["curve"], b["curve"], strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-6)
        assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-6)


class _Process:
    """A process of a torchrun job as read_data sees it; ``failed_elsewhere``: any() hears that the
    first process of another machine could not read the data."""

    active = True

    def __init__(self, local_rank: int, failed_elsewhere: bool = False):
        self.local_rank, self.failed_elsewhere = local_rank, failed_elsewhere

    def any(self, flag: bool) -> bool:
        return flag or self.failed_elsewhere


def test_under_torchrun_only_the_first_process_of_a_machine_downloads(tmp_path, monkeypatch):
    # processes that download into one folder at once would race to write the same files
    from labelemb import data as data_mod
    from labelemb.cli import read_data
    from labelemb.config import RECIPES
    from labelemb.errors import DatasetMissing, UserError

    fetched = []

    def fetch(root, name, why, find):
        fetched.append(root)
        make_mnist(root)
        return find()

    monkeypatch.setattr(data_mod, "_download", fetch)
    cfg = RECIPES["mlp"].config(data=str(tmp_path / "d"), val_size=20)
    with pytest.raises(DatasetMissing):  # another process of the machine reads, never downloads
        read_data(cfg.replace(data=str(tmp_path / "empty")), _Process(local_rank=1))
    assert fetched == []
    assert len(read_data(cfg, _Process(local_rank=0)).train_y) == 100 and len(fetched) == 1  # the first downloads
    assert len(read_data(cfg, _Process(local_rank=1)).train_y) == 100 and len(fetched) == 1  # then the others read
    with pytest.raises(UserError, match="another machine of this torchrun job could not read the data"):
        read_data(cfg, _Process(local_rank=0, failed_elsewhere=True))  # every process stops, none waits for ever


def test_a_bad_torchrun_environment_is_one_line(monkeypatch, capsys):
    import torch

    from labelemb.config import RECIPES
    from labelemb.cli import main
    from labelemb.distributed import Dist, setup
    from labelemb.errors import UserError

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert main(RECIPES["mlp"], ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WORLD_SIZE='two' is not a whole number" in err, err
    # more processes on a machine than it has GPUs: one line before any process group is joined
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"local rank 1 has no GPU of its own: this machine shows 1"):
        setup(Dist(1, 2, 1, active=True), torch.device("cuda"))


def test_a_log_folder_refused_under_torchrun_stops_every_process(tmp_path):
    # only the first process reads and writes the claim; the others hear its verdict (a collective),
    # so none goes on to train and wait for ever on the one that stopped
    data = make_mnist(tmp_path / "mnist", n_train=223, n_test=60)
    logs, other = tmp_path / "logs", tmp_path / "other"
    other.mkdir()
    (other / "mnist_mlp_emb_0.json").write_text("{}")  # the run of this name in another results folder
    (logs / "mnist_mlp_emb_0").mkdir(parents=True)
    (logs / "mnist_mlp_emb_0" / "labelemb_run.txt").write_text(f"{(other / 'mnist_mlp_emb_0.json').resolve()}\n")
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--dry-run", "--quiet", "--results-dir",
                   str(tmp_path / "r"), "--tensorboard", str(logs), nproc=2, timeout=300)
    assert r.returncode != 0 and r.stderr.count("holds the TensorBoard log of") == 1, r.stderr[-3000:]
    assert not list((tmp_path / "r").glob("*.json"))
