"""Tiny datasets in the real on-disk formats, so the real loading code runs in tests."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the entry scripts' recipes are imported by the tests
FASHION = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """An IDX file of unsigned bytes: magic 0x0000080<ndim>, big-endian dims, then the data."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_mnist(folder: Path, n_train: int = 120, n_test: int = 40, seed: int = 0, gz: bool = True) -> Path:
    """Four IDX files; image i has background value (i % 256) // 4, so order can be checked.

    Images carry their label as a bright block, so a model can learn them in a few steps.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        images[:] = (np.arange(n) % 256)[:, None, None] // 4  # dim background = index
        for i, y in enumerate(labels):
            images[i, 2 * y:2 * y + 4, 4:24] = 255
        ext = ".gz" if gz else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz)
    return folder


def make_cifar(root: Path, name: str = "cifar10", n_per_batch: int = 30, n_test: int = 40, seed: int = 0) -> Path:
    """CIFAR python pickle batches in torchvision's layout under ``root``."""
    rng = np.random.default_rng(seed)
    n_classes = 10 if name == "cifar10" else 100
    key = b"labels" if name == "cifar10" else b"fine_labels"

    def batch(n: int) -> dict:
        labels = rng.integers(0, n_classes, n)
        data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
        return {b"data": data, key: labels.tolist(), b"batch_label": b"test"}

    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(n_per_batch) for i in range(1, 6)}
        files["test_batch"] = batch(n_test)
        files["batches.meta"] = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    else:
        d = root / "cifar-100-python"
        files = {"train": batch(n_per_batch * 2), "test": batch(n_test),
                 "meta": {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                          b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}}
    d.mkdir(parents=True, exist_ok=True)
    for fname, obj in files.items():
        with open(d / fname, "wb") as f:
            pickle.dump(obj, f)
    return root


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 600, env_extra=None):
    """Run an entry script as a user would; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_main(capsys, script_module, *argv: str) -> tuple[int, str]:
    """An entry script's main() in this process: (exit code, what it printed to stderr)."""
    from labelemb.cli import main

    try:
        code = main(script_module.RECIPE, list(argv))
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "mnist")


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    return make_cifar(tmp_path / "cifar", "cifar10")


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    return make_cifar(tmp_path / "cifar", "cifar100")
