"""Training-speed benchmark of the four recipes' models: ``python3 -m labelemb.bench``.

For each model on one device, with synthetic uint8 images of the real shapes (1x28x28 for
MNIST, 3x32x32 for CIFAR) held in a :class:`labelemb.dataset.Dataset` (so our real batching,
augmentation and normalisation run), the real networks (``build_model``), criteria
and optimiser step (``train.build``, ``train_step``), it measures

1. ms/step and images/s of our training step (``Dataset.train_batch`` + ``train_step``),
   baseline and emb, and emb/baseline;
2. the same model fed by a classic torchvision pipeline, and the ratio ours/classic -- CIFAR:
   the authors' (a torchvision-style dataset of the same uint8 images with PIL transforms
   RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize in a DataLoader with 2
   workers, batch shuffled); MNIST (the authors fed it through TensorFlow's reader): the usual
   PyTorch ``datasets.MNIST(transform=ToTensor())`` feed, a PIL image per sample, in a shuffled
   DataLoader; for MNIST also a DataLoader over a TensorDataset of float images
   (``tensor_loader``, the leanest DataLoader feed) and ours/that;
3. the share of the step spent on data: the batch fetch + augmentation + transfer alone over
   the same number of steps, divided by the full step time (for ours and for each DataLoader feed);
4. achieved FLOP/s of the step: 3x the forward FLOPs counted from the layer shapes (2*in*out per
   Linear, 2*k*k*cin*cout*Hout*Wout per conv, per sample; head 2 included in emb mode; other
   layers not counted), as a fraction of a 2048x2048 fp32 matmul timed in the same process;

and for the MLP one epoch (550 steps of batch 100) of our loop -- ``train.run`` itself, on a
synthetic Fashion-MNIST-shaped dataset -- against a bare forward/backward/step over the same
number of pre-built batch tensors (issue 2 asks for at most 1.5x); and for the MLP where emb's
extra time per step goes (``mlp_emb_overhead``): LabelEmbLoss vs cross-entropy forward + backward
on B x n tensors, the optimiser step with and without head 2 and E, and the rest (fp32, eager:
``--amp``/``--compile`` are not applied to these two parts; 7 windows of 200 calls).

Timing: ``time.perf_counter``, after warm-up steps, with ``torch.cuda.synchronize`` only at the
ends of timed windows (on CUDA). Each measurement is ``--repeats`` windows of ``--steps`` steps,
the modes interleaved window by window (alternating which goes first) so that a busy machine
slows both alike; the median window is reported and all windows are kept in the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from . import modes, train
from .bench_feeds import CLASSIC_WORKERS, ClassicFeed, OurFeed
from .config import DEVICES, RECIPES, Config
from .data import FASHION_CLASSES
from .dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from .device import configure, precision, resolve_device
from .models import build_model
from .parsing import Parser, parser
from .errors import UserError
from .results import RunFiles, check_writable_folder, environment, write_json
from .rng import make_generators

BENCH_FORMAT = "labelemb-bench/2"  # 2: the MNIST classic feed is PIL + ToTensor
# what the benchmark compares: the paper's method against the reference, as the paper's time columns do
BASE, METHOD = modes.with_role("reference").name, modes.with_role("method").name
MODES = (BASE, METHOD)
MATMUL_N = 2048
EPOCH_STEPS = 550  # one MNIST epoch: 55,000 / 100


@dataclass(frozen=True)
class Task:
    """One recipe (RECIPES[name]: model, batch) with its data's shape, and how many steps to time."""

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    n_train: int  # the real training set size (synthetic data of this size)
    cifar: bool  # augmentation + normalisation (CIFAR mean/std), the authors' DataLoader with workers
    steps: dict  # device type -> timed steps per window
    warmup: int
    repeats: int

    @property
    def arch(self) -> str:
        return RECIPES[self.name].arch

    @property
    def batch_size(self) -> int:
        return RECIPES[self.name].batch_size


TASKS = {
    "mlp": Task("mlp", (1, 28, 28), 10, 55_000, False, {"cpu": 100, "cuda": 300}, 10, 3),
    "cnn": Task("cnn", (1, 28, 28), 10, 55_000, False, {"cpu": 20, "cuda": 200}, 3, 5),
    "cifar10": Task("cifar10", (3, 32, 32), 10, 50_000, True, {"cpu": 3, "cuda": 50}, 1, 1),
    "cifar100": Task("cifar100", (3, 32, 32), 100, 50_000, True, {"cpu": 2, "cuda": 30}, 1, 1),
}
# --quick: the real image shapes, few steps, and a small batch for the conv nets (CNN, ResNets)
QUICK = dict(steps=2, warmup=1, repeats=1, conv_batch=2, epoch_steps=20)


# ----------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``fn``; synchronises only at the ends of the window."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - t


def synthetic_dataset(name: str, task: Task, n_train: int, seed: int, n_val: int = 0, n_test: int = 0) -> Dataset:
    """Random uint8 images of the task's real shape and random labels, as the real loaders hold them."""
    g = torch.Generator().manual_seed(seed)

    def images(n):
        return torch.randint(0, 256, (n, *task.shape), dtype=torch.uint8, generator=g)

    def labels(n):
        return torch.randint(0, task.num_classes, (n,), generator=g)

    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(task.num_classes)]
    kw = dict(mean=CIFAR_MEAN, std=CIFAR_STD, augment=True) if task.cifar else {}
    return Dataset(name, list(classes), train_x=images(n_train), train_y=labels(n_train),
                   test_x=images(n_test), test_y=labels(n_test),
                   val_x=images(n_val) if n_val else None, val_y=labels(n_val) if n_val else None, **kw)


def forward_flops(arch: str, task: Task, emb: bool) -> int:
    """Forward FLOPs per sample of the Linear and Conv2d layers, from their shapes.

    2*in*out per Linear, 2*kh*kw*(cin/groups)*cout*Hout*Wout per conv (output sizes from one
    forward pass with hooks); head 2 runs (and counts) only in emb mode. Biases, BN, ReLU and
    pooling are not counted.
    """
    model = build_model(arch, task.num_classes, in_channels=task.shape[0], image_size=task.shape[-1]).eval()
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        else:
            kh, kw = m.kernel_size
            total += 2 * kh * kw * (m.in_channels // m.groups) * m.out_channels * out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    with torch.no_grad():
        x = torch.zeros(1, *task.shape)
        model(x, torch.zeros(1, dtype=torch.long)) if emb else model(x)
    for h in handles:
        h.remove()
    return total


def matmul_flops(device: torch.device, windows: int, min_seconds: float = 0.3) -> dict:
    """FLOP/s of a 2048x2048 fp32 matmul on ``device`` (median of ``windows`` timed windows), with the
    numerics configured now (strict fp32, or TF32 with --tf32 on CUDA)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(MATMUL_N, MATMUL_N, generator=g).to(device) for _ in range(2))
    for _ in range(2):
        a @ b
    one = _timed(lambda: a @ b, 1, device)
    reps = max(1, min(1000, math.ceil(min_seconds / max(one, 1e-6))))
    secs = [_timed(lambda: a @ b, reps, device) / reps for _ in range(windows)]
    flop = 2 * MATMUL_N ** 3
    return {"n": MATMUL_N, "dtype": "float32", "reps_per_window": reps, "seconds_per_matmul": statistics.median(secs),
            "windows_seconds": secs, "flops_per_s": flop / statistics.median(secs),
            "precision": precision(device, amp=False)}


# ----------------------------------------------------------------------------- one model
def bench_config(name: str, mode: str, batch_size: int, opts: argparse.Namespace, **changes) -> Config:
    """The recipe's Config for one timed model, with the benchmark's batch, seed and speed options."""
    return RECIPES[name].config(mode=mode, batch_size=batch_size, seed=opts.seed, quiet=True, amp=opts.amp,
                                tf32=opts.tf32, channels_last=opts.channels_last, compile=opts.compile, **changes)


def make_step(cfg: Config, data: Dataset, device: torch.device):
    """One training step of the model ``train.build`` makes for ``cfg``, fed by a feed."""
    parts = train.build(cfg, data, device)

    def step(feed) -> None:
        x, y = feed()
        train.train_step(parts.train_net, parts.criterion, parts.optimizer, (x, y), cfg.two_heads, parts.amp_dtype)

    return step


def _summary(secs: list[float], steps: int, batch: int) -> dict:
    ms = [1000 * s / steps for s in secs]
    med = statistics.median(ms)
    return {"ms_per_step": med, "images_per_s": 1000 * batch / med, "windows_ms_per_step": ms}


def _mode_summary(task: Task, two_heads: bool, secs: dict[str, list[float]], data_ms: dict[str, float], feeds: dict,
                  window: tuple[int, int], matmul: dict) -> dict:
    """One mode's times with our feed, its FLOP/s, and the same model's times with each other feed;
    ``window``: (steps, batch size) of a timed window."""
    steps, bs = window
    flops = forward_flops(task.arch, task, two_heads)
    ours = _summary(secs["ours"], steps, bs)
    step_flops = 3 * flops * bs
    ours.update(
        data_ms_per_step=data_ms["ours"], data_share=data_ms["ours"] / ours["ms_per_step"],
        forward_flops_per_sample=flops, train_flops_per_step=step_flops,
        flops_per_s=step_flops / (ours["ms_per_step"] / 1000),
    )
    ours["fraction_of_matmul"] = ours["flops_per_s"] / matmul["flops_per_s"]
    for f in feeds:
        if f == "ours":
            continue
        other = _summary(secs[f], steps, bs)
        other.update(data_ms_per_step=data_ms[f], data_share=data_ms[f] / other["ms_per_step"],
                     pipeline=feeds[f].description)
        ours[f] = other
        ours[f"ours_over_{f}"] = ours["ms_per_step"] / other["ms_per_step"]
    return ours


def bench_task(name: str, task: Task, device: torch.device, opts: argparse.Namespace,
               matmul: dict, say) -> dict:
    steps = opts.steps or (QUICK["steps"] if opts.quick else task.steps[device.type])
    warmup = opts.warmup if opts.warmup is not None else (QUICK["warmup"] if opts.quick else task.warmup)
    repeats = opts.repeats or (QUICK["repeats"] if opts.quick else task.repeats)
    bs = opts.batch_size or (QUICK["conv_batch"] if opts.quick and task.arch != "mlp" else task.batch_size)
    which = MODES if opts.mode == "both" else (opts.mode,)
    drain = CLASSIC_WORKERS * 2 if task.cifar else 0  # batches the classic loader's workers prefetch
    # Enough images that no DataLoader feed (each has its own) starts a new epoch (restarting its
    # workers) in a timed window: the real training set size, more if the windows need it (quick: just that).
    needed = (len(which) * warmup + repeats * ((len(which) + 1) * steps + drain) + 2) * bs
    n_train = max(needed, min(task.n_train, 4096)) if opts.quick else max(task.n_train, needed)
    data = synthetic_dataset(name, task, n_train, opts.seed).to(device)
    if opts.channels_last:
        data = data.with_channels_last()
    say(f"{name}: {task.arch}, batch {bs}, {n_train} synthetic images {'x'.join(map(str, task.shape))}, "
        f"{warmup} warm-up + {repeats} x {steps} timed steps per measurement")

    out = {"arch": task.arch, "input_shape": list(task.shape), "num_classes": task.num_classes,
           "batch_size": bs, "n_train": n_train, "steps": steps, "warmup": warmup, "repeats": repeats,
           "modes": {}}
    steps_of = {m: make_step(bench_config(name, m, bs, opts), data, device) for m in which}
    feeds = {"ours": OurFeed(data, bs, device, opts.seed),
             "classic": ClassicFeed(data, task, bs, device, bool(opts.channels_last))}
    if not task.cifar:  # MNIST: also the leanest DataLoader feed, for an honest lower bound
        feeds["tensor_loader"] = ClassicFeed(data, task, bs, device, bool(opts.channels_last), kind="tensors")
    secs = {(m, f): [] for m in which for f in feeds}
    data_secs = {f: [] for f in feeds}
    for f, feed in feeds.items():
        for m in which:
            for _ in range(warmup):
                steps_of[m](feed)
    for r in range(repeats):  # interleaved windows: a busy machine slows every mode alike
        for f, feed in feeds.items():
            for m in (which if r % 2 == 0 else which[::-1]):  # neither mode always goes first
                secs[(m, f)].append(_timed(lambda: steps_of[m](feed), steps, device))
            # The data alone over the same number of steps. The classic loader's workers have
            # filled their queue during the training window: take those batches first, so that
            # the window times the loader's own throughput, not batches made in advance.
            for _ in range(drain if f == "classic" else 0):
                feed()
            data_secs[f].append(_timed(feed, steps, device))
    data_ms = {f: 1000 * statistics.median(v) / steps for f, v in data_secs.items()}

    for m in which:
        out["modes"][m] = _mode_summary(task, bench_config(name, m, bs, opts).two_heads, {f: secs[(m, f)] for f in feeds},
                                        data_ms, feeds, (steps, bs), matmul)
    if len(which) == 2:
        out["emb_over_baseline"] = out["modes"][METHOD]["ms_per_step"] / out["modes"][BASE]["ms_per_step"]
    else:
        out["emb_over_baseline"] = None
    return out


# ----------------------------------------------------------------------------- MLP epoch (issue 2)
def _bare_epoch(cfg: Config, data: Dataset, device: torch.device) -> float:
    """Seconds of bare training steps (``train.train_step``) over pre-built batch tensors: the model,
    optimiser, criterion and batches of ``train.build`` and the recipe, without the loop's batching,
    metrics, evaluation or records."""
    parts = train.build(cfg, data, device)
    net, criterion, optimizer, amp_dtype = parts.train_net, parts.criterion, parts.optimizer, parts.amp_dtype
    bs = cfg.batch_size
    perm = torch.randperm(len(data.train_y), generator=make_generators(cfg.seed, device).data).to(device)
    steps = len(data.train_y) // bs
    batches = [(data.prepare(data.train_x[perm[i * bs:(i + 1) * bs]]), data.train_y[perm[i * bs:(i + 1) * bs]])
               for i in range(steps)]

    def loop():
        for x, y in batches:
            train.train_step(net, criterion, optimizer, (x, y), cfg.two_heads, amp_dtype)

    return _timed(loop, 1, device)


def mlp_epoch(device: torch.device, opts: argparse.Namespace, say) -> dict:
    """One epoch of ``train.run`` (mlp.py's recipe, 1 epoch, --quiet) vs the bare loop, per mode."""
    steps = opts.epoch_steps or (QUICK["epoch_steps"] if opts.quick else EPOCH_STEPS)
    task = TASKS["mlp"]
    n_val, n_test = (500, 1000) if opts.quick else (5000, 10000)
    data = synthetic_dataset("fashion-mnist", task, steps * task.batch_size, opts.seed, n_val, n_test).to(device)
    which = MODES if opts.mode == "both" else (opts.mode,)
    say(f"mlp epoch: {steps} steps of batch {task.batch_size}, train.run vs a bare loop over pre-built batches")
    out = {"method": ("ours: train.run with mlp.py's recipe for 1 epoch (--quiet, evaluation excluded: the "
                      "record's epoch_seconds) on a synthetic Fashion-MNIST-shaped dataset; bare: train.train_step "
                      "(forward/loss/zero_grad/backward/step) over the same number of pre-built normalised batch "
                      "tensors"),
           "steps": steps, "batch_size": task.batch_size, "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for m in which:
            cfg = bench_config("mlp", m, task.batch_size, opts, dataset="fashion-mnist", epochs=1,
                               device=device.type, results_dir=tmp)
            bare = _bare_epoch(cfg, data, device)
            record = train.run(cfg, data, device, RunFiles(tmp, f"bench_{m}"))
            ours = record["epoch_seconds"][0]
            out["modes"][m] = {"ours_seconds": ours, "bare_seconds": bare, "ours_over_bare": ours / bare}
    if len(which) == 2:
        out["emb_over_baseline"] = out["modes"][METHOD]["ours_seconds"] / out["modes"][BASE]["ours_seconds"]
    else:
        out["emb_over_baseline"] = None
    return out


# ----------------------------------------------------------------------------- where emb's extra goes
def set_step_grads(model: nn.Module, emb: bool) -> None:
    """Gradients as a training step leaves them: every parameter has one in emb mode; in baseline
    mode head 2 and E have none (zero_grad(set_to_none=True)), so Adam skips them."""
    extra = {id(p) for p in model.emb.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if emb or id(p) not in extra else None


def emb_overhead(device: torch.device, opts: argparse.Namespace, mlp: dict, say) -> dict:
    """The MLP's extra emb time per step, split into the loss (forward + backward of LabelEmbLoss
    vs cross-entropy on B x n leaf tensors), the optimiser step over head 2 and E as well, and the
    rest (head 2's matmuls, the E[y] lookup, their autograd nodes): the step difference minus both."""
    bs, n = mlp["batch_size"], mlp["num_classes"]
    calls = QUICK["steps"] if opts.quick else 200
    windows = 1 if opts.quick else 7
    say(f"mlp emb overhead: loss and optimiser alone, {windows} x {calls} calls each")
    g = torch.Generator().manual_seed(opts.seed)
    o1, o2, e = (torch.randn(bs, n, generator=g).to(device).requires_grad_() for _ in range(3))
    y = torch.randint(0, n, (bs,), generator=g).to(device)
    cfg = RECIPES["mlp"].config(mode=METHOD)
    emb_loss, base_loss = train.make_criterion(cfg), train.make_criterion(cfg.replace(mode=BASE))
    model = build_model(cfg.arch, n, in_channels=1, image_size=28).to(device)
    optimizer = train.make_optimizer(model, cfg.lr)
    leaves = (o1, o2, e)

    def loss_step(fn):
        def run():
            for t in leaves:  # as in a real step: the gradients are new tensors, not accumulated
                t.grad = None
            fn().backward()
        return run

    fns = {("loss", BASE): loss_step(lambda: base_loss(o1, y)),
           ("loss", METHOD): loss_step(lambda: emb_loss(o1, y, o2, e))}
    for fn in fns.values():
        fn()
    secs = {k: [] for k in [*fns, ("optimizer", BASE), ("optimizer", METHOD)]}
    for _ in range(windows):  # interleaved, as the steps
        for k, fn in fns.items():
            secs[k].append(_timed(fn, calls, device))
        for m in MODES:
            set_step_grads(model, emb=m == METHOD)
            optimizer.step()
            secs[("optimizer", m)].append(_timed(optimizer.step, calls, device))
    ms = {k: 1000 * statistics.median(v) / calls for k, v in secs.items()}
    out = {"calls": calls, "windows": windows, "batch_size": bs,
           "note": "loss and optimiser parts timed in fp32 eager mode (no --amp/--compile)",
           "step_ms": {m: mlp["modes"][m]["ms_per_step"] for m in MODES},
           "loss_fwd_bwd_ms": {m: ms[("loss", m)] for m in MODES},
           "optimizer_step_ms": {m: ms[("optimizer", m)] for m in MODES}}
    out["step_extra_ms"] = out["step_ms"][METHOD] - out["step_ms"][BASE]
    out["loss_extra_ms"] = out["loss_fwd_bwd_ms"][METHOD] - out["loss_fwd_bwd_ms"][BASE]
    out["optimizer_extra_ms"] = out["optimizer_step_ms"][METHOD] - out["optimizer_step_ms"][BASE]
    out["other_extra_ms"] = out["step_extra_ms"] - out["loss_extra_ms"] - out["optimizer_extra_ms"]
    return out


# ----------------------------------------------------------------------------- report
def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(result: dict) -> str:
    mm = result["matmul"]["flops_per_s"]
    lines = [f"device {result['env']['device']} ({result['env'].get('device_name')}), {result['env']['threads']} "
             f"threads; 2048x2048 fp32 matmul ({result['matmul']['precision']}): {mm / 1e9:.1f} GFLOP/s",
             f"{'task':9s} {'mode':8s} {'ms/step':>9s} {'img/s':>8s} {'emb/base':>8s} {'classic':>9s} "
             f"{'ours/cls':>8s} {'ours/TDL':>8s} {'data%':>6s} {'cls data%':>9s} {'GFLOP/s':>8s} {'%matmul':>7s}"]
    for name, t in result["tasks"].items():
        for m, r in t["modes"].items():
            ratio = t["emb_over_baseline"] if m == METHOD else None
            lines.append(
                f"{name:9s} {m:8s} {r['ms_per_step']:9.2f} {r['images_per_s']:8.0f} {_fmt(ratio, '8.3f'):>8s} "
                f"{r['classic']['ms_per_step']:9.2f} {r['ours_over_classic']:8.3f} "
                f"{_fmt(r.get('ours_over_tensor_loader'), '8.3f'):>8s} {100 * r['data_share']:6.2f} "
                f"{100 * r['classic']['data_share']:9.2f} {r['flops_per_s'] / 1e9:8.1f} "
                f"{100 * r['fraction_of_matmul']:7.1f}")
    lines.append("classic: the torchvision pipeline (PIL per sample, DataLoader); TDL (MNIST): a DataLoader over "
                 "a TensorDataset of float images")
    ep = result.get("mlp_epoch")
    if ep:
        for m, r in ep["modes"].items():
            lines.append(f"mlp epoch ({ep['steps']} steps) {m:8s}: ours {r['ours_seconds']:.2f}s, bare "
                         f"{r['bare_seconds']:.2f}s, ours/bare {r['ours_over_bare']:.3f}")
        if ep["emb_over_baseline"] is not None:
            lines.append(f"mlp epoch emb/baseline (ours): {ep['emb_over_baseline']:.3f}")
    ov = result.get("mlp_emb_overhead")
    if ov:
        lines.append(f"mlp emb extra per step {ov['step_extra_ms']:.3f} ms = loss {ov['loss_extra_ms']:.3f} "
                     f"(LabelEmbLoss {ov['loss_fwd_bwd_ms'][METHOD]:.3f} vs CE {ov['loss_fwd_bwd_ms'][BASE]:.3f}) "
                     f"+ optimiser {ov['optimizer_extra_ms']:.3f} + rest {ov['other_extra_ms']:.3f} "
                     "(head 2, E lookup, autograd)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def _task_list(text: str) -> list[str]:
    names = list(TASKS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(bad) or repr(text)}; choose 'all' or "
                                         f"from {', '.join(TASKS)}")
    return list(dict.fromkeys(names))


def build_parser() -> Parser:
    defaults = "; ".join(f"{k}: {t.warmup} + {t.repeats} x {t.steps['cpu']} (cuda {t.steps['cuda']})"
                         for k, t in TASKS.items())
    p = parser("python3 -m labelemb.bench", command="labelemb-bench", description=(
        "Time training steps of the four recipes' models on synthetic data of the real shapes: "
        "ours vs a classic torchvision DataLoader pipeline (the authors' for CIFAR; PIL + ToTensor "
        "and a TensorDataset loader for MNIST), emb vs baseline, data share of the step, FLOP/s vs a "
        "fp32 matmul, and (mlp) where emb's extra time per step goes; prints a table and writes JSON. "
        f"Per-task default steps (warm-up + repeats x timed steps): {defaults}."))
    a = p.add_argument
    a("--task", type=_task_list, default="all",
      help=f"'all' or a comma-separated list of {','.join(TASKS)} (cifar10: ResNet-8, cifar100: ResNet-18)")
    a("--mode", choices=("both", *MODES), default="both", help="which training mode(s)")
    a("--device", choices=DEVICES, default="auto", help="auto = cuda if available")
    a("--steps", type=int, default=None, help="timed steps per window (default: per task, see above)")
    a("--warmup", type=int, default=None, help="untimed steps first (default: per task)")
    a("--repeats", type=int, default=None, help="timed windows per measurement; the median is reported "
                                                "(default: per task)")
    a("--batch-size", type=int, default=None, help="override every task's batch size (default: the recipe's)")
    a("--epoch-steps", type=int, default=None, help=f"steps of the MLP epoch comparison (default {EPOCH_STEPS}, "
                                                    f"quick {QUICK['epoch_steps']})")
    a("--quick", action="store_true", help=f"smoke test: {QUICK['warmup']} + {QUICK['steps']} steps, conv-net batch "
                                           f"{QUICK['conv_batch']}, small synthetic sets (real image shapes)")
    a("--threads", type=int, default=0, help="torch.set_num_threads (0 = PyTorch's default)")
    a("--seed", type=int, default=0, help="seed of the synthetic data and the models")
    a("--out", default=None, help="JSON output file (default: bench_<device>.json in the current folder)")
    g = p.add_argument_group("opt-in speed options, as in the training scripts")
    g.add_argument("--tf32", action="store_true", help="TF32 matmuls and convolutions on CUDA (default: strict "
                                                      "fp32, as the training scripts)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the forward pass")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (compiles during warm-up)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    opts = p.parse_args(argv)
    for k in ("steps", "repeats", "batch_size", "epoch_steps"):
        v = getattr(opts, k)
        if v is not None and v < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    if opts.warmup is not None and opts.warmup < 0:
        p.error(f"--warmup must be >= 0, got {opts.warmup}")
    if opts.threads < 0:
        p.error(f"--threads must be >= 0 (0: PyTorch's default), got {opts.threads}")
    if opts.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available; use --device cpu or auto")
    device = resolve_device(opts.device)
    out_path = Path(opts.out or f"bench_{device.type}.json")
    if out_path.is_dir():
        p.error(f"--out {out_path} is a folder; name the JSON file to write")
    try:  # before anything is timed, not after
        check_writable_folder(out_path.parent, "the benchmark's JSON", "--out")
    except UserError as e:
        p.error(str(e))
    out_path.parent.mkdir(parents=True, exist_ok=True)  # now: the result must not be lost at the end
    if opts.threads:
        torch.set_num_threads(opts.threads)
    configure(device, tf32=opts.tf32)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tasks = opts.task
    result = {"format": BENCH_FORMAT, "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": ["python3", "-m", "labelemb.bench", *(sys.argv[1:] if argv is None else argv)],
              "config": {k: v for k, v in vars(opts).items() if k != "out"} | {"tasks": tasks},
              "env": {**environment(device), "precision": precision(device, opts.amp)}}
    say(f"timing a {MATMUL_N}x{MATMUL_N} fp32 matmul on {device} ({precision(device, amp=False)})")
    result["matmul"] = matmul_flops(device, windows=1 if opts.quick else 3)
    result["tasks"] = {}
    for name in tasks:
        result["tasks"][name] = bench_task(name, TASKS[name], device, opts, result["matmul"], say)
    result["mlp_epoch"] = mlp_epoch(device, opts, say) if "mlp" in tasks else None
    both = "mlp" in tasks and opts.mode == "both"
    result["mlp_emb_overhead"] = emb_overhead(device, opts, result["tasks"]["mlp"], say) if both else None
    print(table(result))
    write_json(out_path, result)
    print(f"written {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
