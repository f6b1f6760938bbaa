"""The opt-in speed options give the fp32 default's losses, within stated tolerances (CPU, and CUDA
where a GPU is: those are marked ``cuda``).

Each option trains a few steps of the parts ``labelemb.train.build`` makes from a Config with the
option (``train_step`` on fixed data: uint8 images batched by the real ``Dataset.train_batch``),
from the same seed as a plain fp32 run, and the losses of every step are compared. Tolerances
are relative, on the loss of each step:

- bf16 autocast (``--amp``): 2e-2. bf16 keeps 8 significant bits (a rounding error of up to
  2^-9 ~ 0.2% per value); the loss is computed in fp32 from bf16 logits. Differences of 0.04% to
  0.4% were seen on these runs; a mistake (the loss computed in bf16, autocast not applied to a
  layer, a wrong cast of the gradient) shows up at the percent level or as a NaN.
- channels_last (``--channels-last``, fp32): 1e-3. The same arithmetic in another memory order;
  only the summation order inside the conv kernels changes (~2e-5 seen after 3 steps, Adam's
  normalised steps amplify tiny gradient differences a little); a layout bug changes the loss
  by O(1).
- torch.compile (``--compile``, fp32): 1e-3, for the same reason: Inductor fuses the elementwise
  ops and may reorder fp32 sums, nothing else.
- TF32 (``--tf32``, CUDA only): 1e-2. TF32 multiplies with a 10-bit mantissa (rounding error up to
  2^-11 ~ 0.05% per product, accumulation in fp32), a little better than bf16; the test also checks
  that it changed the losses at all, i.e. that the default really ran in strict fp32.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from conftest import DEVICES, NEEDS_CUDA
from labelemb.config import RECIPES
from labelemb.dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from labelemb.models import build_model
from labelemb.train import build, train_step

AMP_RTOL = 2e-2
LAYOUT_RTOL = 1e-3
COMPILE_RTOL = 1e-3
TF32_RTOL = 1e-2
CL = torch.channels_last
TASK = {"mlp": "mlp", "cnn": "cnn", "resnet8": "cifar10"}  # the recipe of each architecture


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: the runs are tiny, and on a busy small machine more threads only wait."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _data(shape, n, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    kw = dict(mean=CIFAR_MEAN, std=CIFAR_STD, augment=True) if shape[0] == 3 else {}
    return Dataset("synthetic", [str(i) for i in range(10)], x, y, x[:2], y[:2], **kw)


def _losses(arch, mode, shape, batch, steps, device="cpu", **option):
    """Per-step losses of ``steps`` training steps; everything but the option is the same."""
    device = torch.device(device)
    data = _data(shape, batch * steps).to(device)
    if option.get("channels_last"):
        data = data.with_channels_last()
    cfg = RECIPES[TASK[arch]].config(mode=mode, batch_size=batch, seed=0, **option)
    parts = build(cfg, data, device)
    if option.get("channels_last") and arch != "mlp":  # the option really reaches the weights
        w = next(m.weight for m in parts.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert w.is_contiguous(memory_format=CL) and not w.is_contiguous()
    gen = torch.Generator(device=device).manual_seed(1)  # the same crops and flips (CIFAR) in every run
    out = []
    for s in range(steps):
        x, y = data.train_batch(torch.arange(s * batch, (s + 1) * batch, device=device), gen)
        if option.get("channels_last"):  # ... and the data
            assert x.is_contiguous(memory_format=CL) and (shape[0] == 1 or not x.is_contiguous())
        loss, _ = train_step(parts.train_net, parts.criterion, parts.optimizer, (x, y), cfg.two_heads, parts.amp_dtype)
        out.append(loss.item())
    assert all(torch.isfinite(torch.tensor(out)))
    return torch.tensor(out, dtype=torch.float64)


def _assert_close(got, ref, rtol):
    rel = ((got - ref).abs() / ref.abs()).max().item()
    assert rel <= rtol, f"losses {got.tolist()} vs fp32 {ref.tolist()}: relative difference {rel:.2e} > {rtol}"


MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch,mode", [("mlp", "baseline"), ("mlp", "emb"), ("cnn", "emb")])
def test_bf16_autocast_matches_fp32(arch, mode, device):
    ref = _losses(arch, mode, MNIST, batch=16, steps=4, device=device)
    got = _losses(arch, mode, MNIST, batch=16, steps=4, device=device, amp=True)
    assert not torch.equal(got, ref)  # autocast did run in bf16
    _assert_close(got, ref, AMP_RTOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch,shape,batch,mode", [("cnn", MNIST, 16, "emb"), ("resnet8", CIFAR, 4, "emb")])
def test_channels_last_matches_fp32(arch, shape, batch, mode, device):
    ref = _losses(arch, mode, shape, batch=batch, steps=3, device=device)
    got = _losses(arch, mode, shape, batch=batch, steps=3, device=device, channels_last=True)
    _assert_close(got, ref, LAYOUT_RTOL)


@pytest.mark.parametrize("arch,shape,batch", [("mlp", MNIST, 64), ("cnn", MNIST, 32), ("resnet8", CIFAR, 8)])
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=NEEDS_CUDA)])
def test_tf32_matches_fp32(arch, shape, batch, device):
    ref = _losses(arch, "emb", shape, batch=batch, steps=3, device=device)
    try:
        got = _losses(arch, "emb", shape, batch=batch, steps=3, device=device, tf32=True)
    finally:
        from labelemb.device import set_tf32

        set_tf32(False)
    assert not torch.equal(got, ref)  # TF32 did run, so the default did not
    _assert_close(got, ref, TF32_RTOL)


def test_channels_last_model_weights_are_channels_last():
    model = build_model("cnn", 10, 1, 28).to(memory_format=CL)
    w = model.backbone.conv2.weight
    assert w.is_contiguous(memory_format=CL) and not w.is_contiguous()


def _compile_unavailable() -> str | None:
    try:
        import torch._dynamo as dynamo
    except Exception as e:  # pragma: no cover - depends on the install
        return f"torch._dynamo cannot be imported ({e})"
    if not dynamo.is_dynamo_supported():
        return "torch.compile is not supported on this Python/platform"
    compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C++ compiler for Inductor's CPU kernels (g++/c++/clang++ or $CXX)"
    return None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.skipif(_compile_unavailable() is not None, reason=str(_compile_unavailable()))
def test_compile_mlp_matches_eager(device):
    # emb mode: the compiled forward includes head 2 on detached features and the E lookup
    ref = _losses("mlp", "emb", MNIST, batch=16, steps=3, device=device)
    try:
        got = _losses("mlp", "emb", MNIST, batch=16, steps=3, device=device, compile=True)
    finally:
        torch._dynamo.reset()
    _assert_close(got, ref, COMPILE_RTOL)
