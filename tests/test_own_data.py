"""--dataset imagefolder: your own image folders for the CIFAR recipes (decoded once, cached)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_script
from labelemb import imagefolder
from labelemb.data import load_dataset
from labelemb.dataset import CIFAR_MEAN
from labelemb.errors import DataError

CLASSES = ("cat", "airplane", "dog")  # not sorted: the loader sorts them


def _color(label: int, i: int) -> tuple[int, int, int]:
    return (40 * label + i, 200 - 30 * label, 7 * i)


def make_imagefolder(root: Path, n_train: int = 3, n_test: int = 2, size: int = 32) -> Path:
    """root/{train,test}/<class>/<i>.png, image i of class c a flat colour (one of them grey)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (size, size), _color(sorted(CLASSES).index(c), i)).save(d / f"{i}.png")
    Image.new("L", (size, size), 77).save(root / "train" / "dog" / "grey.png")  # 1 channel -> RGB
    (root / "train" / "dog" / "notes.txt").write_text("not an image, ignored")
    return root


def _caches(root: Path) -> list[Path]:
    return sorted(root.glob(".labelemb_cache_*.pt"))


def test_load_cache_reload_and_invalidate(tmp_path):
    root = make_imagefolder(tmp_path / "imgs")
    n = 3 * 3 + 1 + 3 * 2  # train + the grey one + test
    before = dict(imagefolder.stats)
    ds = load_dataset("imagefolder", root)
    assert imagefolder.stats["decoded"] - before["decoded"] == n
    assert ds.classes == ["airplane", "cat", "dog"] and ds.num_classes == 3
    assert ds.train_x.shape == (10, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (6, 3, 32, 32) and ds.train_y.tolist() == [0] * 3 + [1] * 3 + [2] * 4
    assert ds.mean == CIFAR_MEAN and ds.augment  # the CIFAR recipe: its normalisation and augmentation
    assert ds.train_x[3, :, 0, 0].tolist() == list(_color(1, 0))  # cat/0.png, pixels as written
    assert ds.train_x[9, :, 5, 5].tolist() == [77, 77, 77]  # dog/grey.png, after dog/0..2.png
    [cache] = _caches(root)
    stamp = cache.stat().st_mtime_ns

    # unchanged folder: served from the cache, nothing decoded, the cache file not rewritten
    hits, decoded = imagefolder.stats["cache_hits"], imagefolder.stats["decoded"]
    again = load_dataset("imagefolder", root)
    assert imagefolder.stats["cache_hits"] == hits + 1 and imagefolder.stats["decoded"] == decoded
    assert _caches(root) == [cache] and cache.stat().st_mtime_ns == stamp
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(again, k), getattr(ds, k))
    assert again.classes == ds.classes

    # one image changes: a new cache, decoded again, the stale one removed
    changed = root / "test" / "cat" / "1.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(changed)
    os.utime(changed, ns=(stamp + 10**9, stamp + 10**9))  # a new mtime even on coarse clocks
    third = load_dataset("imagefolder", root)
    assert imagefolder.stats["decoded"] == decoded + n
    [new_cache] = _caches(root)
    assert new_cache != cache
    assert third.test_x[3, :, 0, 0].tolist() == [1, 2, 3]  # test: airplane 0,1; cat 0,1 -> index 3


def test_corrupt_cache_is_rebuilt(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", n_train=1, n_test=1)
    ds = load_dataset("imagefolder", root)
    [cache] = _caches(root)
    cache.write_bytes(b"garbage")
    decoded = imagefolder.stats["decoded"]
    again = load_dataset("imagefolder", root)
    assert imagefolder.stats["decoded"] > decoded and torch.equal(again.train_x, ds.train_x)


def test_wrong_size_is_an_error_unless_resize(tmp_path):
    root = make_imagefolder(tmp_path / "imgs", n_train=1, n_test=1)
    big = root / "train" / "cat" / "big.png"
    Image.new("RGB", (40, 30), (9, 9, 9)).save(big)
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    msg = str(e.value)
    assert str(big) in msg and "40x30" in msg and "32x32" in msg and "--resize" in msg and "\n" not in msg
    assert _caches(root) == []
    ds = load_dataset("imagefolder", root, resize=True)
    assert ds.train_x.shape[1:] == (3, 32, 32)
    assert ds.train_x[2, :, 10, 10].tolist() == [9, 9, 9]  # cat: 0.png, big.png
    assert [p.name.startswith(".labelemb_cache_resize_") for p in _caches(root)] == [True]


@pytest.mark.parametrize("case,needle", [
    ("empty_class", "holds no images"),
    ("class_mismatch", "only in train: horse"),
    ("no_test", "has no test/ folder"),
    ("one_class", "at least 2 classes"),
    ("not_an_image", "cannot read"),
    ("broken_link", "cannot read"),
])
def test_layout_errors_are_one_clear_line(tmp_path, case, needle):
    root = make_imagefolder(tmp_path / "imgs", n_train=1, n_test=1)
    if case == "empty_class":
        (root / "test" / "horse").mkdir()
        (root / "train" / "horse").mkdir()
        (root / "train" / "horse" / "readme.txt").write_text("no images here")
        culprit = root / "train" / "horse"
    elif case == "class_mismatch":
        (root / "train" / "horse").mkdir()
        Image.new("RGB", (32, 32)).save(root / "train" / "horse" / "0.png")
        culprit = root
    elif case == "no_test":
        import shutil
        shutil.rmtree(root / "test")
        culprit = root
    elif case == "one_class":
        import shutil
        for split in ("train", "test"):
            for c in ("airplane", "dog"):
                shutil.rmtree(root / split / c)
        culprit = root
    elif case == "broken_link":  # a link to an image that is gone
        culprit = root / "train" / "cat" / "gone.png"
        culprit.symlink_to(tmp_path / "nowhere.png")
    else:
        culprit = root / "train" / "cat" / "broken.png"
        culprit.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError) as e:
        load_dataset("imagefolder", root)
    msg = str(e.value)
    assert needle in msg and str(culprit) in msg and "\n" not in msg




def test_cli_errors_exit_2(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "imgs", n_train=1, n_test=1)
    out = tmp_path / "r"
    r = run_script("cifar10.py", "--dataset", "imagefolder", "--results-dir", str(out), capsys=capsys)
    assert r.returncode == 2 and "needs --data DIR" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_script("cifar10.py", "--resize", "--data", str(tmp_path), "--results-dir", str(out), capsys=capsys)
    assert r.returncode == 2 and "--resize applies to --dataset imagefolder only" in r.stderr
    Image.new("RGB", (64, 64)).save(root / "test" / "dog" / "big.png")
    r = run_script("cifar10.py", "--dataset", "imagefolder", "--data", str(root), "--results-dir", str(out),
                   capsys=capsys)
    assert r.returncode == 2 and "big.png is 64x64 pixels" in r.stderr and "--resize" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert not out.exists()


def test_cifar10_dry_run_on_an_image_folder(tmp_path, capsys):
    root = make_imagefolder(tmp_path / "imgs", n_train=2, n_test=2)
    out = tmp_path / "results"
    r = run_script("cifar10.py", "--dataset", "imagefolder", "--data", str(root), "--dry-run", "--batch-size", "4",
                   "--results-dir", str(out), "--quiet", capsys=capsys)
    assert r.returncode == 0, r.stderr
    stem = "imagefolder_resnet8_emb_0"
    rec = json.loads((out / f"{stem}.json").read_text())
    assert rec["status"] == "complete" and rec["dataset"] == "imagefolder"
    assert rec["classes"] == ["airplane", "cat", "dog"]  # the report and heatmap read them from here
    assert np.load(out / f"{stem}_emb.npy").shape == (1, 3, 3)
    assert len(_caches(root)) == 1
