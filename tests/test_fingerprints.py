"""Which data a run saw: every record and checkpoint carries the sha256 of the files it read
(uncompressed), the real MNIST is recognised by them, and fixtures are not mistaken for it."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, make_cifar, make_mnist, run_script
from labelemb.data import load_dataset
from labelemb.fingerprints import KNOWN, describe, identify

REAL_MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_real_mnist = pytest.mark.skipif(not REAL_MNIST.is_dir(),
                                      reason=f"the real MNIST is not at {REAL_MNIST} (../shared/data/mnist)")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
OFFICIAL_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # 60,000 training labels


def gz_sha256(path: Path) -> str:
    return hashlib.sha256(gzip.open(path, "rb").read()).hexdigest()


def test_mnist_source_is_the_uncompressed_files_sha256(tmp_path):
    d = make_mnist(tmp_path / "m")
    ds = load_dataset("mnist", d, val_size=20, download=False)
    assert ds.source["folder"] == str(d.resolve())
    assert ds.source["sha256"] == {name: gz_sha256(d / f"{name}.gz") for name in MNIST_FILES}
    assert identify(ds.source["sha256"]) is None  # a fixture is no known dataset
    assert describe(ds.source).startswith("not a dataset this suite knows")


def test_uncompressed_and_gzipped_copies_read_the_same(tmp_path):
    a = load_dataset("mnist", make_mnist(tmp_path / "gz"), val_size=20, download=False)
    b = load_dataset("mnist", make_mnist(tmp_path / "raw", gz=False), val_size=20, download=False)
    assert a.source["sha256"] == b.source["sha256"]
    c = load_dataset("mnist", make_mnist(tmp_path / "other", seed=1), val_size=20, download=False)
    assert c.source["sha256"] != a.source["sha256"]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_source_is_each_pickle_files_sha256(tmp_path, name):
    root = make_cifar(tmp_path / "c", name)
    d = next(p for p in root.iterdir() if p.is_dir())
    ds = load_dataset(name, root, download=False)
    assert ds.source["folder"] == str(d.resolve())
    assert ds.source["sha256"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in d.iterdir()}


def test_record_and_checkpoint_carry_the_data(tmp_path, capsys):
    d = make_mnist(tmp_path / "m")
    out = tmp_path / "r"
    r = run_script("mlp.py", "--dry-run", "--data", str(d), "--val-size", "20", "--results-dir", str(out),
                   "--quiet", capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    want = {name: gz_sha256(d / f"{name}.gz") for name in MNIST_FILES}
    assert rec["data"] == {"folder": str(d.resolve()), "sha256": want}
    ckpt = torch.load(out / "mnist_mlp_emb_0.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["data"] == rec["data"] and ckpt["classes"] == [str(i) for i in range(10)]


def test_describe_older_records():
    assert describe(None).startswith("not recorded")
    assert describe({"folder": "x"}).startswith("not recorded")
    assert describe({"folder": "x", "sha256": dict(KNOWN["MNIST (the official files)"])}) == \
        "MNIST (the official files)"


# ----------------------------------------------------------------------------- the real MNIST
@needs_real_mnist
def test_real_mnist_split_mean_and_counts():
    ds = load_dataset("mnist", REAL_MNIST, download=False)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (55_000, 5_000, 10_000)
    assert ds.train_x.shape[1:] == (1, 28, 28)
    x = torch.cat([ds.val_x, ds.train_x]).double() / 255  # the 60,000 training images in file order
    assert abs(x.mean().item() - 0.1307) < 5e-5 and abs(x.std().item() - 0.3081) < 5e-5
    counts = np.bincount(torch.cat([ds.val_y, ds.train_y]).numpy(), minlength=10)
    assert counts.tolist() == OFFICIAL_TRAIN_COUNTS
    assert np.bincount(ds.test_y.numpy(), minlength=10).sum() == 10_000


@needs_real_mnist
def test_real_mnist_fingerprint_is_its_files_and_known(tmp_path, capsys):
    out = tmp_path / "r"
    r = run_script("mlp.py", "--dry-run", "--data", str(REAL_MNIST), "--results-dir", str(out), "--quiet",
                   capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / "mnist_mlp_emb_0.json").read_text())
    assert rec["data"]["sha256"] == {name: gz_sha256(REAL_MNIST / f"{name}.gz") for name in MNIST_FILES}
    assert identify(rec["data"]["sha256"]) == "MNIST (the official files)"
