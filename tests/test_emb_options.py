"""--emb-dim (compressed label embedding), --init-emb and --freeze-emb."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import mlp
from conftest import grads_of, make_mnist, reaches, run_script, spec_terms, zero_or_none
from labelemb.cli import build_parser, check_resumable, make_config
from labelemb.config import RECIPES
from labelemb.dataset import Dataset
from labelemb.embedding import CompressedLabelEmbedding, LabelEmbLoss
from labelemb.errors import UserError
from labelemb.models import LabelEmbNet, build_model
from labelemb.results import RunFiles
from labelemb.train import run, seed_everything, train_step


# ----------------------------------------------------------------------------- compressed embedding
class _Features(nn.Module):
    """A 'backbone' that passes random features through a small linear layer."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.feature_dim = d

    def forward(self, x):
        return torch.relu(self.fc(x))


def _emb_params(emb: CompressedLabelEmbedding) -> list[torch.Tensor]:
    return [emb.code.weight, emb.proj.weight, emb.proj.bias]


def test_compressed_shapes_and_matrix():
    torch.manual_seed(0)
    emb = CompressedLabelEmbedding(16, 7, 3)
    o2, e = emb(torch.randn(5, 16), torch.tensor([0, 6, 2, 2, 1]))
    assert o2.shape == (5, 7) and e.shape == (5, 7) and (e >= 0).all()
    E = emb.matrix()
    assert E.shape == (7, 7) and torch.equal(E[[0, 6, 2, 2, 1]], e.detach())
    torch.testing.assert_close(emb.soft_targets().sum(1), torch.ones(7))
    model = build_model("mlp", 10, 1, 28, emb_dim=4)
    assert isinstance(model.emb, CompressedLabelEmbedding) and not hasattr(model.emb, "weight")
    with pytest.raises(ValueError):
        CompressedLabelEmbedding(16, 7, 0)


def test_compressed_routes_gradients_like_the_full_matrix():
    torch.manual_seed(0)
    model = LabelEmbNet(_Features(), 10, emb_dim=4)
    x = torch.randn(16, 16)
    with torch.no_grad():
        am = model.emb.head(model.backbone(x)).argmax(1)
    y = torch.where(torch.arange(16) % 2 == 0, am, (am + 3) % 10)  # head 2 right on even samples only
    o1, o2, e = model(x, y)
    groups = {"backbone": list(model.backbone.parameters()), "head1": list(model.head.parameters()),
              "head2": list(model.emb.head.parameters()), "E": _emb_params(model.emb)}

    def grads(loss):
        return grads_of(loss, groups)

    terms = spec_terms(o1, o2, e, y, alpha=0.05)
    routes = {"o1_y": {"backbone", "head1"}, "o1_emb": {"backbone", "head1"}, "o2_y": {"head2"},
              "emb_o2": {"E"}, "re": {"head2"}}
    for name, term in terms.items():
        for group, g in grads(term).items():
            assert reaches(g) if group in routes[name] else zero_or_none(g), (name, group)
    real = grads(LabelEmbLoss(alpha=0.05)(o1, y, o2, e))
    for got, want in zip(real["E"], grads(terms["emb_o2"])["E"]):  # E learns from L_emb_o2 alone
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    # only the code rows of labels where head 2 was right get a gradient
    rows = set(torch.nonzero(real["E"][0].abs().sum(1)).flatten().tolist())
    assert rows and rows <= set(y[0::2].tolist())


def test_ten_thousand_classes_memory_and_one_step():
    n, h, d = 10_000, 32, 16
    torch.manual_seed(0)
    model = LabelEmbNet(_Features(d), n, emb_dim=h)
    emb_params = sum(p.numel() for p in _emb_params(model.emb))
    assert emb_params == n * h + h * n + n  # O(n*h): 650,000 against n*n = 100,000,000
    assert emb_params < n * n // 100
    assert all(p.numel() <= max(n * h, n * d) for p in model.parameters())  # no n x n tensor anywhere
    x = torch.randn(8, d)
    with torch.no_grad():
        y = model.emb.head(model.backbone(x)).argmax(1)  # head 2 right: E gets a gradient
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, o1 = train_step(model, LabelEmbLoss(), opt, (x, y), two_heads=True)
    assert torch.isfinite(loss) and o1.shape == (8, n)
    after = model.state_dict()
    moved = set(torch.nonzero((after["emb.code.weight"] - before["emb.code.weight"]).abs().sum(1)).flatten().tolist())
    assert moved == set(y.tolist())  # only the batch's labels' codes move
    assert not torch.equal(after["emb.proj.weight"], before["emb.proj.weight"])


def _synthetic(n_classes: int, n: int = 40) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, n_classes, (n,), generator=g)
    return Dataset("mnist", [str(i) for i in range(n_classes)], train_x=x, train_y=y, test_x=x[:10], test_y=y[:10],
                   val_x=x[:10], val_y=y[:10])


def _cfg(tmp_path, *argv):
    args = build_parser(mlp.RECIPE).parse_args(["--data", str(tmp_path), "--val-size", "10", "--batch-size", "10",
                                                 "--dry-run", "--quiet", *argv])
    return make_config(mlp.RECIPE, args, 0)


def test_snapshots_of_a_compressed_embedding(tmp_path):
    files = RunFiles(tmp_path / "small", "run")
    files.dir.mkdir()
    rec = run(_cfg(tmp_path, "--emb-dim", "4"), _synthetic(10), torch.device("cpu"), files)
    E = np.load(files.emb)
    assert rec["embedding_file"] == files.emb.name and E.shape == (1, 10, 10) and (E >= 0).all()
    files = RunFiles(tmp_path / "big", "run")
    files.dir.mkdir()
    rec = run(_cfg(tmp_path, "--emb-dim", "4"), _synthetic(1001), torch.device("cpu"), files)
    assert rec["status"] == "complete" and rec["embedding_file"] is None and not files.emb.exists()
    assert "1001 classes" in rec["embedding_note"]


# ----------------------------------------------------------------------------- --init-emb, --freeze-emb


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return make_mnist(tmp_path_factory.mktemp("m") / "mnist")


def _dry(data, out, *extra):
    return ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--dry-run", "--quiet", *extra]


@pytest.mark.parametrize("shape", [(9, 9), (3, 10, 9), (10,), (2, 2, 10, 10)])
def test_init_emb_shape_mismatch(shape, mnist_dir, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros(shape, np.float32))
    r = run_script("mlp.py", *_dry(mnist_dir, tmp_path / "r", "--init-emb", str(bad)), capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert f"holds an array of shape {shape}" in r.stderr and "expected (10, 10) or (epochs, 10, 10)" in r.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,message", [
    (["--init-emb", "/nonexistent.npy"], "no such file"),
    (["--mode", "baseline", "--freeze-emb"], "--freeze-emb applies to --mode emb only"),
    (["--emb-dim", "4", "--freeze-emb"], "cannot be combined with --emb-dim"),
    (["--emb-dim", "-1"], "--emb-dim must be >= 1"),
])
def test_bad_emb_flags(argv, message, mnist_dir, tmp_path, capsys):
    r = run_script("mlp.py", *_dry(mnist_dir, tmp_path / "r", *argv), capsys=capsys)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1


def test_init_emb_not_a_npy(mnist_dir, tmp_path, capsys):
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    r = run_script("mlp.py", *_dry(mnist_dir, tmp_path / "r", "--init-emb", str(junk)), capsys=capsys)
    assert r.returncode == 2 and "cannot read it as a .npy array" in r.stderr and len(r.stderr.splitlines()) == 1
    assert "not a .npy file" in r.stderr and "pickle" not in r.stderr  # not numpy's long advice on pickles
    assert not (tmp_path / "r").exists()


def _stack(tmp_path):
    """An emb run's per-epoch stack; the last epoch is a distinctive matrix M."""
    g = np.random.default_rng(0)
    M = (3 * np.eye(10) + g.normal(0, 0.5, (10, 10))).astype(np.float32)
    path = tmp_path / "prev_emb.npy"
    np.save(path, np.stack([np.eye(10, dtype=np.float32), M]))
    return path, M


def test_init_emb_starts_from_the_last_epoch(mnist_dir, tmp_path, capsys):
    path, M = _stack(tmp_path)
    out = tmp_path / "r"
    assert run_script("mlp.py", *_dry(mnist_dir, out, "--init-emb", str(path)), capsys=capsys).returncode == 0
    E = np.load(out / "mnist_mlp_emb_0_emb.npy")[-1]
    assert np.abs(E - M).max() < 0.01  # 3 Adam steps of lr 1e-3 from M
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    assert rec["config"]["init_emb"] == str(path) and rec["config"]["freeze_emb"] is False


def test_freeze_emb_leaves_E_and_head2_unchanged(mnist_dir, tmp_path, capsys):
    path, M = _stack(tmp_path)
    out = tmp_path / "r"
    r = run_script("mlp.py", *_dry(mnist_dir, out, "--init-emb", str(path), "--freeze-emb"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(out / "mnist_mlp_emb_0_emb.npy")[-1], M)  # E exactly M after the steps
    state = RunFiles(out, "mnist_mlp_emb_0").load_checkpoint()
    seed_everything(0)
    init = build_model("mlp", 10, 1, 28).state_dict()  # the run's initial weights (seed 0)
    w = state["model"]
    assert torch.equal(w["emb.weight"], torch.from_numpy(M))
    assert torch.equal(w["emb.head.weight"], init["emb.head.weight"])  # head 2 unused
    assert not torch.equal(w["head.weight"], init["head.weight"])  # head 1 trained


def test_frozen_loss_is_the_head1_part_of_labelemb():
    """beta*CE(y, o1) + (1-beta)*CE(softmax(E[y]), o1): the real loss minus head 2's and E's terms."""
    from labelemb.train import make_criterion

    torch.manual_seed(0)
    model = build_model("mlp", 10, 1, 28)
    with torch.no_grad():
        model.emb.weight.normal_()
    x, y = torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])
    crit = make_criterion(RECIPES["mlp"].config(mode="emb", freeze_emb=True, beta=0.3), model)
    o1, o2, e = model(x, y)
    t = spec_terms(o1, o2, e, y)
    torch.testing.assert_close(crit(o1, y), 0.3 * t["o1_y"] + 0.7 * t["o1_emb"])


def test_old_checkpoints_without_the_new_keys_still_resume(tmp_path):
    cfg = _cfg(tmp_path)
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in ("emb_dim", "init_emb", "freeze_emb", "smoothing", "resize")}
    check_resumable(cfg, {"config": old}, "x.ckpt")  # no error
    with pytest.raises(UserError, match="emb_dim"):
        check_resumable(_cfg(tmp_path, "--emb-dim", "8"), {"config": old}, "x.ckpt")
