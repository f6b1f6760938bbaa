"""CUDA: strict fp32 by default, TF32 only when asked, no host sync in the training step, torchrun
with NCCL. Every test here is marked ``cuda`` and skipped without a GPU
(``python3 -m pytest -m cuda -q``); the scripts' dry runs, the speed options, SIGTERM/resume and
the benchmark run on CUDA through the ``DEVICES`` parameter of their own test files.

On a CPU the TF32 switches and the precision the record states are still checked, since the
flags are process-wide settings that exist without a GPU.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import NEEDS_CUDA, make_mnist, run_script
from labelemb.config import RECIPES
from labelemb.dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from labelemb.device import configure, precision, set_tf32, tf32_state
from labelemb.distributed import Dist
from labelemb.train import Meter, build, train_step

cuda = pytest.mark.parametrize("device", [pytest.param("cuda", marks=NEEDS_CUDA)])


_FLAGS = [(torch.backends.cuda.matmul, "fp32_precision"), (getattr(torch.backends.cudnn, "conv", None), "fp32_precision"),
          (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
          (torch.backends.cudnn, "benchmark")]


@pytest.fixture
def restore_numerics():
    """These are process-wide: put back exactly what was there (torch >= 2.9 has the fp32_precision
    settings, older versions the allow_tf32 flags; setting both kinds is an error, so only one is)."""
    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    keep = [(o, a) for o, a in _FLAGS if o is not None and (a == "benchmark" or new_api == (a == "fp32_precision"))]
    before = [getattr(o, a) for o, a in keep]
    yield
    for (o, a), v in zip(keep, before):
        setattr(o, a, v)


def test_tf32_switches_and_what_the_record_says(restore_numerics):
    set_tf32(True)
    assert tf32_state() == {"matmul": True, "conv": True}
    assert precision(torch.device("cpu"), amp=False) == "fp32"  # a CPU has no TF32, whatever the flags
    configure(torch.device("cuda"), tf32=False)  # what every CUDA run does first (flags only: no GPU needed)
    assert tf32_state() == {"matmul": False, "conv": False} and torch.backends.cudnn.benchmark
    assert precision(torch.device("cuda"), amp=False) == "fp32"
    assert precision(torch.device("cpu"), amp=True) == "bf16 autocast (fp32 outside it)"
    configure(torch.device("cuda"), tf32=True)
    assert precision(torch.device("cuda"), amp=False) == "tf32"


def _relative_error(got: torch.Tensor, exact: torch.Tensor) -> float:
    return ((got.double().cpu() - exact).abs().max() / exact.abs().max()).item()


@cuda
def test_default_is_strict_fp32_on_the_gpu(device, restore_numerics):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    x, w = torch.randn(8, 64, 16, 16, generator=g), torch.randn(64, 64, 3, 3, generator=g)
    exact_mm = a.double() @ b.double()
    exact_conv = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
    errors = {}
    for tf32 in (False, True):
        configure(torch.device(device), tf32=tf32)
        mm = a.to(device) @ b.to(device)
        conv = torch.nn.functional.conv2d(x.to(device), w.to(device), padding=1)
        torch.cuda.synchronize()
        errors[tf32] = (_relative_error(mm, exact_mm), _relative_error(conv, exact_conv))
    # fp32 keeps 24 bits (error ~1e-7 per product, ~1e-6 over 576-term sums); TF32 keeps 11 (~1e-3)
    assert max(errors[False]) < 1e-5, errors
    assert min(errors[True]) > 1e-4, errors  # TF32 really differs, so the first pass was not TF32


@cuda
@pytest.mark.parametrize("task,mode", [("mlp", "emb"), ("cnn", "baseline"), ("cifar10", "emb")])
def test_no_host_sync_in_the_training_step(task, mode, device):
    """set_sync_debug_mode("error") turns any synchronising call (.item(), a blocking copy, nonzero...)
    into an error: the batch, the step and the device-side metrics run without one."""
    dev = torch.device(device)
    cifar = task == "cifar10"
    shape, bs = ((3, 32, 32), 8) if cifar else ((1, 28, 28), 16)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    kw = dict(mean=CIFAR_MEAN, std=CIFAR_STD, augment=True) if cifar else {}
    data = Dataset(task, [str(i) for i in range(10)], x, y, x[:8], y[:8], **kw).to(dev)
    cfg = RECIPES[task].config(mode=mode, batch_size=bs)
    parts = build(cfg, data, dev)
    meter = Meter(dev, 0)
    perm = torch.randperm(64, generator=g).to(dev)

    def step(i: int) -> None:
        idx = perm[i * bs:(i + 1) * bs]
        xb, yb = data.train_batch(idx, parts.gens.aug)
        loss, o1 = train_step(parts.train_net, parts.criterion, parts.optimizer, (xb, yb), cfg.two_heads,
                              parts.amp_dtype)
        meter.add(loss, o1, yb, bs, 1)

    step(0)  # warm-up: cuDNN autotuning, the normalisation constants, Adam's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(1, 4):
            step(i)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert meter.nonfinite_error(Dist(), 4) is None


@cuda
@pytest.mark.parametrize("mode", ["baseline", "emb"])
def test_torchrun_nccl_one_process_matches_a_plain_run(mode, device, tmp_path):
    data = make_mnist(tmp_path / "mnist", n_train=223, n_test=60)
    common = ["--data", str(data), "--val-size", "20", "--batch-size", "20", "--epochs", "2", "--quiet",
              f"--mode={mode}", "--device", device]
    plain, ddp = tmp_path / "plain", tmp_path / "ddp"
    r = run_script("cnn.py", *common, "--results-dir", str(plain))
    assert r.returncode == 0, r.stderr
    r = run_script("cnn.py", *common, "--results-dir", str(ddp), nproc=1)
    assert r.returncode == 0, r.stderr[-3000:]
    stem = f"mnist_cnn_{mode}_0"
    a = json.loads((plain / f"{stem}.json").read_text())
    b = json.loads((ddp / f"{stem}.json").read_text())
    assert "distributed" not in a["env"]
    assert b["env"]["distributed"] == {"backend": "nccl", "world_size": 1} and b["config"]["world_size"] == 1
    for ra, rb in zip(a["curve"], b["curve"], strict=True):  # the same run, through DDP
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert abs(rb["test_acc"] - ra["test_acc"]) <= 2 / 60 + 1e-9
    if mode == "emb":
        assert np.allclose(np.load(plain / f"{stem}_emb.npy"), np.load(ddp / f"{stem}_emb.npy"), atol=1e-4)
