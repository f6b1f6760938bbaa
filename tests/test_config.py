"""The typed Config: one place for every default and range, built from flags, records and checkpoints."""
from __future__ import annotations

import json
import math
from dataclasses import fields

import pytest

from conftest import ROOT, make_mnist, run_script
from labelemb.cli import build_parser, make_config
from labelemb import modes
from labelemb.config import RECIPES, RESUME_KEYS, VARIANT_KEYS, Config, ConfigError, check
from labelemb.embedding import LabelEmbLoss
from labelemb.errors import UserError
from labelemb.modes.smoothing import LabelSmoothingLoss


def test_recipes_are_spec_section_2():
    r = RECIPES
    assert (r["cifar100"].arch, r["cifar100"].epochs, r["cifar100"].batch_size, r["cifar100"].test_batch_size,
            r["cifar100"].lr_decay_every, r["cifar100"].lr_decay) == ("resnet18", 100, 128, 100, 40, 0.2)
    assert (r["cifar10"].arch, r["cifar10"].epochs, r["cifar10"].lr_decay_every) == ("resnet8", 100, 0)
    for t in ("mlp", "cnn"):
        assert (r[t].epochs, r[t].batch_size, r[t].evals_per_epoch, r[t].val_size, r[t].drop_last) == (15, 100, 5, 5000, True)
    assert r["mlp"].reported == "best_val" and r["cnn"].reported == "final" and r["cifar10"].reported == "final"
    cfg = r["mlp"].config()
    assert (cfg.tau, cfg.alpha, cfg.beta, cfg.lr, cfg.mode) == (2.0, 0.9, 0.5, 1e-3, "emb")


def test_config_is_frozen_and_validated():
    cfg = RECIPES["cnn"].config()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # frozen
    for bad, msg in [(dict(lr=math.inf), "--lr must be a finite number > 0"),
                     (dict(tau=math.nan), "--tau must be a finite number > 0"),
                     (dict(alpha=0.0), "--alpha must be in (0, 1]"), (dict(beta=1.5), "--beta must be in [0, 1]"),
                     (dict(batch_size=0), "--batch-size must be >= 1"), (dict(mode="soft"), "--mode must be one of"),
                     (dict(emb_dim=-2), "--emb-dim must be >= 1 (or 0"), (dict(smoothing=0.1), "applies to --mode ls"),
                     (dict(mode="baseline", freeze_emb=True), "--freeze-emb applies to --mode emb only"),
                     (dict(epochs=2.5), None), (dict(lr="fast"), "--lr must be a number")]:
        with pytest.raises(ConfigError) as e:
            RECIPES["cnn"].config(**bad)
        assert isinstance(e.value, ValueError) and isinstance(e.value, UserError)  # library users and the CLI
        if msg:
            assert msg in str(e.value), (bad, str(e.value))


def test_losses_use_the_same_checks():
    for kw in (dict(tau=math.inf), dict(alpha=math.nan), dict(beta=-1.0)):
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be"):
            LabelEmbLoss(**kw)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        LabelSmoothingLoss(1.0)
    with pytest.raises(ConfigError, match="must be >= 1, got 0"):
        check("runs", 0)


def test_resume_keys_come_from_the_fields_and_the_modes_settings():
    names = {f.name for f in fields(Config)}
    assert set(RESUME_KEYS) <= names
    assert {"lr", "batch_size", "seed", "mode", "amp"} <= set(RESUME_KEYS)
    assert not {"num", "quiet", "results_dir", "device", "data", "compile", "world_size"} & set(RESUME_KEYS)
    assert set(VARIANT_KEYS) <= set(RESUME_KEYS)
    a = RECIPES["mlp"].config()
    assert a.resume_mismatch(a.replace(beta=0.3, num=7)) == [("beta", 0.3, 0.5)]  # a setting of the mode
    assert a.resume_mismatch(a.replace(emb_dim=8)) == [("emb_dim", 8, 0)]
    assert a.resume_mismatch(a.replace(mode="ls")) == [("mode", "ls", "emb")]


def test_every_committed_record_loads():
    records = sorted(ROOT.glob("*_results/*.json"))
    assert len(records) >= 40
    for path in records:
        rec = json.loads(path.read_text())
        cfg = Config.from_record(rec["config"])
        assert (cfg.task, cfg.mode, cfg.seed) == (rec["task"], rec["mode"], rec["seed"]), path
        assert Config.from_record(cfg.to_dict()) == cfg  # and a record of today's code round-trips


def test_older_records_get_the_defaults_of_later_keys():
    new = RECIPES["mlp"].config(dataset="fashion-mnist")
    old = {k: v for k, v in new.to_dict().items() if k not in (*VARIANT_KEYS, "emb_dim", "init_emb", "freeze_emb")}
    old["a_key_from_the_future"] = 1
    assert Config.from_record(old) == new
    with pytest.raises(ConfigError, match="--tau must be"):
        Config.from_record(old | {"tau": -1.0})


def test_flags_give_the_config(tmp_path):
    args = build_parser(RECIPES["mlp"]).parse_args(["--mode", "ls", "--seed", "10", "--num", "3", "--dry-run",
                                                    "--data", str(tmp_path)])
    cfg = make_config(RECIPES["mlp"], args, 5)
    assert (cfg.seed, cfg.num, cfg.epochs, cfg.smoothing, cfg.dry_run) == (12, 5, 1, 0.1, True)
    assert modes.get("ls").setting("smoothing").bound.holds(cfg.smoothing)


@pytest.mark.parametrize("argv,message", [
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--tau", "nan"], "--tau must be a finite number > 0, got nan"),
    (["--beta", "nan"], "--beta must be a finite number in [0, 1]"),
    (["--smoothing", "nan", "--mode", "ls"], "--smoothing must be a finite number"),
])
def test_non_finite_flags_one_line_nothing_written(argv, message, tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(out), *argv, capsys=capsys)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1
    assert not out.exists()


def test_data_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(b"x")
    r = run_script("mlp.py", "--data", str(f), "--results-dir", str(tmp_path / "r"), capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert f"--data {f} is a file, not a folder" in r.stderr and "download" not in r.stderr
    assert f.read_bytes() == b"x" and not (tmp_path / "r").exists()


def test_numpy_scalars_and_the_ls_default():
    import numpy as np

    assert LabelEmbLoss(tau=np.float32(2.0)).tau == 2.0  # numbers.Real, as before the shared checks
    assert RECIPES["mlp"].config(epochs=np.int64(3)).epochs == 3
    assert RECIPES["mlp"].config(mode="ls").smoothing == 0.1  # the same as a CLI run records
    assert RECIPES["mlp"].config(mode="ls", smoothing=0.2).smoothing == 0.2


def test_torchrun_is_recognised_only_when_it_launched_the_process(monkeypatch):
    from labelemb.distributed import from_env

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(k, raising=False)
    assert not from_env().active
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # as some cluster wrappers export for a plain process
    assert not from_env().active
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")  # torchrun, one process
    assert from_env().active and from_env().world == 1
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    d = from_env()
    assert d.active and (d.rank, d.world, d.main) == (1, 2, False)
