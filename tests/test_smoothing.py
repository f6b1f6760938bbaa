"""--mode ls (label smoothing) and --mode ols (online label smoothing, Zhang et al. 2021)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import mlp
from conftest import StopAfter, make_mnist, run_script
from labelemb.cli import build_parser, make_config
from labelemb.data import load_dataset
from labelemb.results import RunFiles
from labelemb.embedding import SoftTargetLoss
from labelemb.modes.smoothing import LabelSmoothingLoss, OnlineLabelSmoothingLoss
from labelemb.train import Interrupted, run


# ----------------------------------------------------------------------------- ls
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_ls_equals_torch_label_smoothing(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (7,), generator=g)
    ours = LabelSmoothingLoss(eps)(logits, y)
    ref = F.cross_entropy(logits, y, label_smoothing=eps)
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours, logits)
    (g2,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g1, g2)


def test_ls_rejects_bad_epsilon():
    for eps in (-0.1, 1.0):
        with pytest.raises(ValueError):
            LabelSmoothingLoss(eps)


def test_soft_target_loss_is_the_mixed_cross_entropy():
    g = torch.Generator().manual_seed(1)
    S = torch.rand(4, 4, generator=g).softmax(1)
    logits, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 2])
    logp = logits.log_softmax(1)
    expected = 0.3 * F.nll_loss(logp, y) + 0.7 * -(S[y] * logp).sum(1).mean()
    torch.testing.assert_close(SoftTargetLoss(S, hard_weight=0.3)(logits, y), expected)


# ----------------------------------------------------------------------------- ols
# A hand-made epoch of 5 samples, 3 classes; logits = log(p), so softmax(logits) = p exactly.
EPOCH = [  # (label, softmax output)
    (0, [0.7, 0.2, 0.1]),  # correct
    (0, [0.5, 0.3, 0.2]),  # correct
    (0, [0.2, 0.6, 0.2]),  # wrong (predicts 1): not counted
    (1, [0.1, 0.8, 0.1]),  # correct
    (2, [0.4, 0.3, 0.3]),  # wrong: class 2 has no correct sample
]
# by hand: row 0 = mean of the two correct class-0 outputs, row 1 = its one output, row 2 = uniform
EXPECTED = [[0.6, 0.25, 0.15], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]


def _batch(rows):
    y = torch.tensor([r[0] for r in rows])
    return torch.tensor([r[1] for r in rows]).log(), y


def test_ols_matrix_after_a_hand_made_epoch():
    crit = OnlineLabelSmoothingLoss(3)
    torch.testing.assert_close(crit.matrix, torch.full((3, 3), 1 / 3))  # uniform at the start
    logits, y = _batch(EPOCH)
    # during the first epoch: 0.5 CE + 0.5 CE(uniform) = torch's label smoothing 0.5
    torch.testing.assert_close(crit(logits[:2], y[:2]), F.cross_entropy(logits[:2], y[:2], label_smoothing=0.5))
    crit(logits[2:], y[2:])  # the epoch in two batches
    crit.eval()
    crit(logits, y)  # evaluation mode: not collected
    crit.train()
    torch.testing.assert_close(crit.matrix, torch.full((3, 3), 1 / 3))  # S changes only at the epoch's end
    crit.end_epoch()
    torch.testing.assert_close(crit.matrix, torch.tensor(EXPECTED))
    assert crit.sums.abs().sum() == 0 and crit.counts.sum() == 0
    # the next epoch trains against the rebuilt rows: 0.5 CE(y) + 0.5 CE(S[y])
    logp = logits.log_softmax(1)
    S = torch.tensor(EXPECTED)
    expected = 0.5 * F.nll_loss(logp, y) + 0.5 * -(S[y] * logp).sum(1).mean()
    torch.testing.assert_close(crit(logits, y), expected)
    crit.end_epoch()
    torch.testing.assert_close(crit.matrix, torch.tensor(EXPECTED))  # the same epoch again: the same rows
    # an epoch where class 1 has no correct sample: its row becomes uniform, not the one it had
    # (the authors' code); class 2's first correct sample gives it its row
    logits, y = _batch([(0, [0.7, 0.2, 0.1]), (1, [0.6, 0.3, 0.1]), (2, [0.1, 0.1, 0.8])])
    crit(logits, y)
    crit.end_epoch()
    torch.testing.assert_close(crit.matrix, torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.1, 0.1, 0.8]]))


class _FakeDist:
    """Two ranks: sum_ adds the other rank's tensor of the same shape."""

    def __init__(self, other: OnlineLabelSmoothingLoss):
        self.other = {tuple(other.sums.shape): other.sums.clone(), tuple(other.counts.shape): other.counts.clone()}

    def sum_(self, t):
        return t.add_(self.other[tuple(t.shape)])


def test_ols_sums_are_reduced_over_ranks():
    logits, y = _batch(EPOCH)
    a, b = OnlineLabelSmoothingLoss(3), OnlineLabelSmoothingLoss(3)
    a(logits[:3], y[:3], global_batch=5)  # rank 0 takes 3 samples of the global batch, rank 1 two
    b(logits[3:], y[3:], global_batch=5)
    a.end_epoch(_FakeDist(b))
    torch.testing.assert_close(a.matrix, torch.tensor(EXPECTED))


def test_ols_checkpoint_mid_epoch_round_trip():
    logits, y = _batch(EPOCH)
    a = OnlineLabelSmoothingLoss(3)
    a(logits[:2], y[:2])
    state = a.checkpoint_state()
    b = OnlineLabelSmoothingLoss(3)
    b.load_checkpoint_state(state)
    b(logits[2:], y[2:])
    b.end_epoch()
    torch.testing.assert_close(b.matrix, torch.tensor(EXPECTED))
    c = OnlineLabelSmoothingLoss(3)
    c.load_checkpoint_state(state, carry_sums=False)  # another rank: the sums are carried by rank 0
    assert c.counts.sum() == 0


def test_ols_interrupted_mid_epoch_resumes_exactly(tmp_path):
    data_dir = make_mnist(tmp_path / "mnist", n_train=260, n_test=40)
    args = build_parser(mlp.RECIPE).parse_args(["--mode", "ols", "--data", str(data_dir), "--val-size", "20",
                                                 "--batch-size", "20", "--epochs", "3", "--quiet"])
    data = load_dataset("mnist", data_dir, val_size=20)

    def go(out, resume=None, stop=None):
        cfg = make_config(mlp.RECIPE, args, 0)
        files = RunFiles(out, "run")
        files.dir.mkdir(exist_ok=True)
        return run(cfg, data, torch.device("cpu"), files, resume=resume, stop=stop), files

    ref, ref_files = go(tmp_path / "ref")
    with pytest.raises(Interrupted):
        go(tmp_path / "out", stop=StopAfter(12 + 5))  # 12 steps per epoch: inside epoch 2
    state = RunFiles(tmp_path / "out", "run").load_checkpoint()
    assert state["step"] == 5 and state["criterion"]["counts"].sum() > 0
    rec, files = go(tmp_path / "out", resume=state)
    strip = lambda c: [{k: v for k, v in row.items() if k != "train_seconds"} for row in c]  # noqa: E731
    assert strip(rec["curve"]) == strip(ref["curve"])
    a, b = ref_files.load_checkpoint(), files.load_checkpoint()
    assert torch.equal(a["criterion"]["matrix"], b["criterion"]["matrix"])
    assert not torch.allclose(a["criterion"]["matrix"], torch.full((10, 10), 0.1))  # it did learn rows
    assert torch.allclose(a["criterion"]["matrix"].sum(1), torch.ones(10))


# ----------------------------------------------------------------------------- the scripts
@pytest.mark.parametrize("mode", ["ls", "ols"])
def test_mlp_dry_run(mode, tmp_path, capsys):
    data, out = make_mnist(tmp_path / "mnist"), tmp_path / "r"
    extra = ["--smoothing", "0.2"] if mode == "ls" else []
    r = run_script("mlp.py", "--mode", mode, "--data", str(data), "--val-size", "20", "--results-dir", str(out),
                   "--dry-run", "--quiet", *extra, capsys=capsys)
    assert r.returncode == 0, r.stderr
    stem = f"mnist_mlp_{mode}_0"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{stem}{s}" for s in (".ckpt", ".csv", ".json", ".png"))
    rec = json.loads((out / f"{stem}.json").read_text())
    assert rec["status"] == "complete" and rec["mode"] == mode and rec["embedding_file"] is None
    assert rec["config"].get("smoothing") == (0.2 if mode == "ls" else None)  # a setting of ls only
    assert math.isfinite(rec["curve"][-1]["train_loss"])




@pytest.mark.parametrize("argv,message", [
    (["--mode", "ls", "--smoothing", "1"], "--smoothing must be in [0, 1), got 1.0"),
    (["--mode", "ls", "--smoothing", "-0.1"], "--smoothing must be in [0, 1)"),
    (["--mode", "emb", "--smoothing", "0.1"], "--smoothing applies to --mode ls only"),
    (["--mode", "ols", "--smoothing", "0.2"], "--smoothing applies to --mode ls only"),
    (["--mode", "ols", "--emb-dim", "4"], "--emb-dim applies to --mode emb only"),
])
def test_bad_flags(argv, message, tmp_path, capsys):
    r = run_script("mlp.py", "--data", str(tmp_path), "--results-dir", str(tmp_path / "r"), *argv, capsys=capsys)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_report_notes_runs_of_one_mode_with_different_options():
    from types import SimpleNamespace as R

    from labelemb.report import config_notes

    old = R(mode="emb", config={"tau": 2.0})  # a record from before the options existed
    new = R(mode="emb", config={"tau": 2.0, "emb_dim": 0, "init_emb": None})
    assert config_notes({"emb": [old, new]}) == []
    ls = [R(mode="ls", config={"smoothing": 0.1}), R(mode="ls", config={"smoothing": 0.2})]
    frozen = R(mode="emb", config={"tau": 2.0, "freeze_emb": True})
    notes = config_notes({"emb": [old, frozen], "ls": ls})
    assert "emb runs differ in config 'freeze_emb': false, true" in notes
    assert "ls runs differ in config 'smoothing': 0.1, 0.2" in notes
