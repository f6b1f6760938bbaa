"""The table of modes: every part of the suite reads it, a rival needs nothing outside its own file
(a toy mode defined here trains and is reported), and Tf-KD is added that way."""
from __future__ import annotations

import ast
import json
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT, make_cifar, make_mnist, run_script
from labelemb import modes
from labelemb.bounds import Bound
from labelemb.modes.tfkd import TeacherFreeKDLoss

PACKAGE = ROOT / "labelemb"


# ----------------------------------------------------------------------------- Tf-KD
def tfkd_by_hand(o1, y, alpha=0.1, temperature=20.0, multiplier=100.0, correct_prob=0.99):
    """loss_kd_regularization of Yuan et al.'s code, written out with PyTorch's own losses."""
    k = o1.shape[1]
    teacher = torch.full_like(o1, (1 - correct_prob) / (k - 1))
    teacher[torch.arange(len(y)), y] = correct_prob
    with warnings.catch_warnings():  # KLDivLoss's "mean" divides by B x K, as their code has it
        warnings.simplefilter("ignore")
        kl = nn.KLDivLoss()(F.log_softmax(o1, dim=1), F.softmax(teacher / temperature, dim=1))
    return (1 - alpha) * F.cross_entropy(o1, y) + alpha * kl * multiplier


@pytest.mark.parametrize("kw", [{}, dict(alpha=0.95, temperature=40.0, multiplier=1.0),
                                dict(alpha=0.5, temperature=1.0, multiplier=3.0, correct_prob=0.7)])
def test_tfkd_loss_and_gradient_equal_the_formula(kw):
    g = torch.Generator().manual_seed(0)
    o1 = torch.randn(16, 10, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (16,), generator=g)
    a, b = o1.clone().requires_grad_(), o1.clone().requires_grad_()
    ours = TeacherFreeKDLoss(**kw)(a.float(), y)
    ref = tfkd_by_hand(b.float(), y, **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-8)


def test_tfkd_defaults_are_the_authors_resnet18_settings():
    m = modes.get("tfkd")
    assert m.defaults() == {"tfkd_alpha": 0.1, "tfkd_temperature": 20.0, "tfkd_multiplier": 100.0,
                            "tfkd_correct_prob": 0.99}
    assert not m.two_heads(None) and m.role == "rival"
    for bad in (dict(alpha=1.5), dict(temperature=0.0), dict(correct_prob=1.0)):
        with pytest.raises(ValueError):
            TeacherFreeKDLoss(**bad)


@pytest.mark.parametrize("script,kind", [("mlp.py", "mnist"), ("cnn.py", "mnist"), ("cifar10.py", "cifar10"),
                                         ("cifar100.py", "cifar100")])
def test_tfkd_dry_run_of_each_script_trains(tmp_path, capsys, monkeypatch, script, kind):
    from labelemb import train

    monkeypatch.setattr(train, "DRY_RUN_STEPS", 1)  # a wide ResNet-18 step is seconds on a CPU
    data = make_mnist(tmp_path / "m") if kind == "mnist" else make_cifar(tmp_path / "c", kind, n_per_batch=8, n_test=4)
    extra = ["--val-size", "20"] if kind == "mnist" else ["--batch-size", "2"]
    out = tmp_path / "r"
    r = run_script(script, "--mode", "tfkd", "--data", str(data), "--results-dir", str(out), "--dry-run", "--quiet",
                   "--tfkd-temperature", "10", *extra, capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = json.loads(next(out.glob("*_tfkd_0.json")).read_text())
    assert rec["status"] == "complete" and rec["config"]["tfkd_temperature"] == 10.0
    assert rec["config"]["tfkd_alpha"] == 0.1 and "tau" not in rec["config"]
    losses = [row["train_loss"] for row in rec["curve"]]
    assert all(torch.isfinite(torch.tensor(losses)))


def test_tfkd_settings_belong_to_tfkd(tmp_path, capsys):
    r = run_script("mlp.py", "--mode", "emb", "--tfkd-alpha", "0.5", "--data", str(tmp_path), capsys=capsys)
    assert r.returncode == 2 and "--tfkd-alpha applies to --mode tfkd only" in r.stderr


# ----------------------------------------------------------------------------- a rival in one file
class ToyLoss(nn.Module):
    """Cross-entropy against targets that put ``spread`` on the next class: a rival nobody published."""

    def __init__(self, spread: float):
        super().__init__()
        self.spread = spread

    def forward(self, logits, target, *unused, global_batch=None):
        n = logits.shape[1]
        soft = (1 - self.spread) * F.one_hot(target, n) + self.spread * F.one_hot((target + 1) % n, n)
        return -(soft * logits.float().log_softmax(dim=1)).sum(dim=1).mean()


TOY = modes.Mode(name="toy", label="Toy rival", color="tab:cyan", help="a rival defined in a test",
                 loss=lambda cfg, model: ToyLoss(cfg.toy_spread),
                 settings=(modes.Setting("toy_spread", 0.2, "mass on the next class", Bound(0, 1)),))


@pytest.fixture
def toy_mode():
    modes.register(TOY)
    yield TOY
    del modes.MODES[TOY.name]


def test_a_rival_defined_here_trains_and_is_reported(toy_mode, tmp_path, capsys):
    from labelemb import report

    data, out = make_mnist(tmp_path / "m", n_train=220), tmp_path / "r"
    for mode, extra in (("baseline", []), ("toy", ["--toy-spread", "0.3"])):
        r = run_script("mlp.py", "--mode", mode, "--data", str(data), "--val-size", "20", "--results-dir", str(out),
                       "--dry-run", "--quiet", "--runs", "3", *extra, capsys=capsys)
        assert r.returncode == 0, r.stderr
    rec = json.loads((out / "mnist_mlp_toy_1.json").read_text())
    assert rec["config"]["toy_spread"] == 0.3 and rec["seed"] == 1
    r = run_script("mlp.py", "--mode", "toy", "--toy-spread", "2", "--data", str(data), capsys=capsys)
    assert r.returncode == 2 and "--toy-spread must be in [0, 1]" in r.stderr  # its range, from its declaration
    assert report.main([str(out), "--include-dry-run"]) == 0
    md = (out / "report.md").read_text()
    assert "| Toy rival | 3 |" in md and "| Toy rival vs baseline | 3 | 0 |" in md
    rows = list(__import__("csv").DictReader((out / "comparisons.csv").open()))
    assert [(r["mode_a"], r["mode_b"], r["pairs"]) for r in rows] == [("baseline", "toy", "3")]


def test_register_refuses_a_taken_name_or_setting():
    with pytest.raises(ValueError, match="registered already"):
        modes.register(modes.get("ls"))
    clash = modes.Mode(name="clash", label="x", color="k", help="x", loss=lambda c, m: None,
                       settings=(modes.Setting("tau", 1.0, "x", Bound(0)),))
    with pytest.raises(ValueError, match="setting 'tau' is a setting of mode 'emb'"):
        modes.register(clash)
    assert "clash" not in modes.MODES


# ----------------------------------------------------------------------------- one place per mode
def test_the_command_line_and_the_report_read_the_table():
    from labelemb.cli import build_parser
    from labelemb.config import RECIPES
    from labelemb.report.records import mode_label, mode_order

    p = build_parser(RECIPES["mlp"])
    choices = next(a for a in p._actions if a.dest == "mode").choices
    assert list(choices) == list(modes.MODES)
    flags = {o for a in p._actions for o in a.option_strings}
    assert {s.flag for m in modes.MODES.values() for s in m.settings} <= flags
    assert mode_order(["tfkd", "ols", "emb", "zzz", "baseline", "ls"]) == ["baseline", "emb", "ls", "ols", "tfkd", "zzz"]
    assert mode_label("emb") == "LabelEmb" and mode_label("zzz") == "zzz"


def _python_files() -> list[Path]:
    return [*PACKAGE.rglob("*.py"), *ROOT.glob("*.py"), *(ROOT / "sweeps").glob("*.py")]


def test_a_mode_is_named_only_in_its_module_and_the_table():
    table = PACKAGE / "modes" / "__init__.py"
    for m in modes.MODES.values():
        own = Path(__import__(m.loss.__module__, fromlist=["x"]).__file__)
        quoted = re.compile(rf"""["']{re.escape(m.name)}["']""")
        hits = [f"{p.relative_to(ROOT)}:{i}" for p in _python_files() if p not in (own, table)
                for i, line in enumerate(p.read_text().splitlines(), 1) if quoted.search(line)]
        assert not hits, (m.name, hits)


def test_the_labelemb_file_stands_alone():
    tree = ast.parse((PACKAGE / "embedding.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    relative = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
    assert not relative and imported <= {"__future__", "math", "numbers", "torch"}, imported
