"""Shared test helpers: tiny datasets in the real on-disk formats (so the real loading code runs),
the one way to run an entry script, and SPEC §1's loss terms written out (labelemb.embedding)."""
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package, as the entry scripts find it
FASHION = Path("/usr/share/datasets/fashion-mnist")
# Tests that need a GPU: marked cuda (python3 -m pytest -m cuda -q runs just them), skipped without one.
NEEDS_CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]  # for tests that run on both


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


def run_script(script: str, *args: str, capsys=None, nproc: int | None = None, cwd: Path | None = None,
               timeout: int = 600, env_extra=None) -> subprocess.CompletedProcess:
    """Run an entry script as a user would; returns its exit code, stdout and stderr.

    With pytest's ``capsys`` it runs in this process (fast: no interpreter or torch start-up);
    without, in a subprocess (for signals and real exit paths), under torchrun with ``nproc``
    processes when that is given.
    """
    if capsys is not None:
        from labelemb.cli import main
        from labelemb.config import RECIPES

        try:
            code = main(RECIPES[Path(script).stem], list(args))
        except SystemExit as e:  # argparse
            code = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess([script, *args], code, out.out, out.err)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*launcher, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


class StopAfter:
    """A StopFlag that asks to stop after ``k`` steps (stop_agreed reads ``requested`` once a step)."""

    def __init__(self, k: int):
        self.k, self.n = k, 0

    @property
    def requested(self):
        self.n += 1
        return "SIGTERM" if self.n > self.k else None


# ----------------------------------------------------------------------------- SPEC §1, literally
# The literal autograd transcription of SPEC §1 lives beside the loss, as its reference implementation.
from labelemb.embedding import reference_terms as spec_terms  # noqa: E402


def grads_of(loss, groups: dict) -> dict:
    """The gradients of ``loss`` for each named list of parameters (None where none reaches)."""
    flat = [p for ps in groups.values() for p in ps]
    gs = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    out, i = {}, 0
    for k, ps in groups.items():
        out[k] = list(gs[i:i + len(ps)])
        i += len(ps)
    return out


def reaches(gs):
    return any(g is not None and torch.count_nonzero(g) > 0 for g in gs)


def zero_or_none(gs):
    return all(g is None or torch.count_nonzero(g) == 0 for g in gs)


@pytest.fixture
def one_thread():
    """In-process runs with one thread, as a subprocess with OMP_NUM_THREADS=1 has (bitwise equal)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "mnist")


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> Path:
    return make_cifar(tmp_path / "cifar", "cifar10")


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> Path:
    return make_cifar(tmp_path / "cifar", "cifar100")
