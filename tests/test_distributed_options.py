"""torchrun (2 CPU processes) with --mode ols (its sums reduced over the ranks) and --freeze-emb
(head 2 and E out of the graph: DDP's find_unused_parameters)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_mnist, run_script


def test_ols_two_processes_match_one(tmp_path, capsys):
    # the OLS matrix of epoch 1 shapes epoch 2's loss: equal curves need the per-class sums of both ranks
    data = make_mnist(tmp_path / "mnist", n_train=223, n_test=60)
    common = ["--data", str(data), "--val-size", "20", "--batch-size", "20", "--epochs", "2", "--quiet",
              "--mode=ols"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = run_script("mlp.py", *common, "--results-dir", str(one), capsys=capsys)
    assert r1.returncode == 0, r1.stderr
    r2 = run_script("mlp.py", *common, "--results-dir", str(two), nproc=2)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a = json.loads((one / "mnist_mlp_ols_0.json").read_text())
    b = json.loads((two / "mnist_mlp_ols_0.json").read_text())
    assert b["config"]["world_size"] == 2
    for ra, rb in zip(a["curve"], b["curve"], strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)
        assert rb["test_loss"] == pytest.approx(ra["test_loss"], rel=1e-5)
    import torch
    ca = torch.load(one / "mnist_mlp_ols_0.ckpt", weights_only=False)["criterion"]["matrix"]
    cb = torch.load(two / "mnist_mlp_ols_0.ckpt", weights_only=False)["criterion"]["matrix"]
    torch.testing.assert_close(ca, cb, rtol=1e-4, atol=1e-6)


def test_freeze_emb_under_torchrun(tmp_path):
    data = make_mnist(tmp_path / "mnist")
    M = (2 * np.eye(10) + 0.1).astype(np.float32)
    init = tmp_path / "E.npy"
    np.save(init, M)
    out = tmp_path / "r"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--batch-size", "20", "--epochs", "1", "--quiet",
                   "--init-emb", str(init), "--freeze-emb", "--results-dir", str(out), nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.array_equal(np.load(out / "mnist_mlp_emb_0_emb.npy")[-1], M)
