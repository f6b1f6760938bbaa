"""The training loop shared by the four recipes: train, evaluate at the recipe's points,
record, checkpoint, resume.

Read top to bottom: :func:`train_step` is one optimiser step, :func:`evaluate` one pass over
a held-out set, :func:`run` a whole run (or the rest of one, from a checkpoint).
"""
from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import Dataset
from .distributed import Dist
from .embedding import BaselineLoss, CompressedLabelEmbedding, LabelEmbLoss
from .errors import UserError
from .models import build_model
from .results import RECORD_FORMAT, RunFiles, environment
from .smoothing import LabelSmoothingLoss, OnlineLabelSmoothingLoss, SoftTargetLoss

# baseline and emb are the paper's; ls (label smoothing) and ols (online label smoothing) are rivals
MODES = ("baseline", "emb", "ls", "ols")
CKPT_FORMAT = "labelemb-ckpt/1"
DRY_RUN_STEPS = 3  # --dry-run: this many training steps of one epoch ...
DRY_RUN_EVAL = 500  # ... evaluated on at most this many samples per held-out set
SNAPSHOT_MAX_CLASSES = 1000  # --emb-dim: per-epoch n x n snapshots of E only up to this many classes


class RunFailed(Exception):
    """The run stopped on its own (non-finite loss); its record is marked failed."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written; the run can be resumed."""


class StopFlag:
    """Set by SIGINT/SIGTERM so the loop stops after the current step; a second SIGINT exits at once.

    Every file is written atomically, so exiting at once never leaves half a file behind.
    """

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            print("\nsecond interrupt: exiting now (files are written atomically, nothing is half-written)",
                  flush=True)
            os._exit(130)
        self.requested = signal.Signals(signum).name

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- one step
def make_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    """The recipe's Adam (lr, betas 0.9/0.999, eps 1e-8, no weight decay) over every parameter.

    The fused implementation (CUDA; CPU since torch 2.4) is the same update in one kernel for
    all parameters instead of about ten small ops per parameter, which on a CPU dominated the
    MLP's step; it differs from the per-parameter loop only in floating-point rounding.
    """
    dev = next(model.parameters()).device.type
    fused = dev == "cuda" or (dev == "cpu" and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
    return torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                            fused=fused or None)


def make_criterion(cfg: dict, model: nn.Module | None = None) -> nn.Module:
    """The loss of ``cfg["mode"]``; ``model`` (a LabelEmbNet) is needed by ``ols`` (its class
    count) and by ``--freeze-emb`` (the fixed E, read when the criterion is made)."""
    mode = cfg["mode"]
    if mode == "emb" and cfg.get("freeze_emb"):
        # E fixed: beta*CE(y, o1) + (1-beta)*CE(softmax(E[y]), o1), constant soft targets, head 2 unused
        return SoftTargetLoss(model.emb.soft_targets(), hard_weight=cfg["beta"])
    if mode == "emb":
        return LabelEmbLoss(tau=cfg["tau"], alpha=cfg["alpha"], beta=cfg["beta"])
    if mode == "ls":
        return LabelSmoothingLoss(cfg["smoothing"])
    if mode == "ols":
        return OnlineLabelSmoothingLoss(model.num_classes, hard_weight=0.5)
    return BaselineLoss()


def uses_head2(cfg: dict) -> bool:
    """Whether the step computes head 2 and E[y] (LabelEmb with a learned E)."""
    return cfg["mode"] == "emb" and not cfg.get("freeze_emb")


def load_init_emb(path: str, num_classes: int) -> torch.Tensor:
    """E from a saved ``.npy`` (``--init-emb``): an n x n matrix, or an emb run's per-epoch stack
    (epochs, n, n), of which the last epoch is taken. UserError (one line) for anything else."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"--init-emb {path}: cannot read it as a .npy array ({e}); pass the _emb.npy "
                        "file of an earlier emb run") from None
    n = num_classes
    shape = tuple(a.shape)
    if a.ndim == 3 and shape[0] >= 1:
        a = a[-1]
    if a.shape != (n, n):
        raise UserError(f"--init-emb {path} holds an array of shape {shape}; expected ({n}, {n}) or "
                        f"(epochs, {n}, {n}) for the {n} classes of this dataset")
    if a.dtype.kind not in "fiu":
        raise UserError(f"--init-emb {path} holds {a.dtype} values; expected a real n x n matrix")
    if not np.isfinite(a).all():
        raise UserError(f"--init-emb {path} holds non-finite values (NaN or inf); pass the embedding of "
                        "a run that did not diverge")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def embedding_matrix(emb: nn.Module) -> torch.Tensor | None:
    """E as an n x n matrix for the per-epoch snapshot, or None when it is too big to write
    (a compressed embedding of more than SNAPSHOT_MAX_CLASSES classes)."""
    if isinstance(emb, CompressedLabelEmbedding):
        return emb.matrix() if emb.proj.out_features <= SNAPSHOT_MAX_CLASSES else None
    return emb.weight.detach()


def train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               x: torch.Tensor, y: torch.Tensor, emb_mode: bool,
               amp_dtype: torch.dtype | None = None,
               global_batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns the (detached) loss and head-1 logits, without a host sync.

    ``model`` is a :class:`LabelEmbNet` or a wrapper of one (torch.compile, DDP); with
    ``amp_dtype`` the forward runs under autocast, the loss in fp32 (the criteria cast).
    ``global_batch`` (under DDP) is the batch size of all ranks together, see the criteria.
    """
    kw = {} if global_batch is None else {"global_batch": global_batch}
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(x, y) if emb_mode else model(x)
    if emb_mode:
        o1, o2, e = out
        loss = criterion(o1, y, o2, e, **kw)
    else:
        o1 = out
        loss = criterion(o1, y, **kw)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), o1.detach()


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             amp_dtype: torch.dtype | None = None, dist: Dist = Dist()) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of head 1 on (x, y); under DDP each rank takes a shard."""
    was_training = model.training
    model.eval()
    n = len(y)
    x, y = x[dist.shard(n)], y[dist.shard(n)]
    sums = torch.zeros(2, dtype=torch.float64, device=y.device)  # correct, loss
    for i in range(0, len(y), batch_size):
        with torch.autocast(y.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            o1 = model(data.prepare(x[i:i + batch_size])).float()
        yb = y[i:i + batch_size]
        sums[0] += (o1.argmax(dim=1) == yb).sum()
        sums[1] += F.cross_entropy(o1, yb, reduction="sum").double()
    model.train(was_training)
    correct, loss_sum = dist.sum_(sums).tolist()
    return correct / max(n, 1), loss_sum / max(n, 1)


# ----------------------------------------------------------------------------- a run
@dataclass
class Schedule:
    """Steps per epoch and the steps (1-based, within an epoch) after which we evaluate."""

    steps: int
    eval_at: tuple[int, ...]

    @classmethod
    def of(cls, cfg: dict, n_train: int) -> "Schedule":
        bs = cfg["batch_size"]
        steps = n_train // bs if cfg["drop_last"] else math.ceil(n_train / bs)
        if steps < 1:
            raise UserError(f"--batch-size {bs} is larger than the {n_train} training samples; use a smaller one")
        if cfg["dry_run"]:
            steps = min(steps, DRY_RUN_STEPS)
        k = min(cfg["evals_per_epoch"], steps)
        return cls(steps, tuple(sorted({round(i * steps / k) for i in range(1, k + 1)})))


def reported_metric(curve: list[dict], how: str) -> dict:
    """SPEC §2: the last point's test error, or (mlp) the test error at the best validation
    accuracy, ties going to the later point."""
    if not curve:
        return {}
    if how == "best_val":
        best = max(range(len(curve)), key=lambda i: (curve[i]["val_acc"], i))
        row, name = curve[best], "test error at best validation accuracy"
    else:
        row, name = curve[-1], "final test error"
    return {"metric": how, "description": name, "test_error_pct": row["test_error_pct"],
            "epoch": row["epoch"], "step": row["step"]}


STOP_CHECK_EVERY = 20  # under DDP, steps between agreeing on a stop request (a collective, so not every step)


def stop_agreed(stop: StopFlag | None, dist: Dist, step: int, at_pause: bool) -> bool:
    """Whether to stop after this step. One process: the flag. Under DDP all ranks must take the
    same branch, so they agree (a sum over ranks) at pauses and every STOP_CHECK_EVERY steps."""
    wanted = stop is not None and stop.requested is not None
    if dist.active and not at_pause and step % STOP_CHECK_EVERY:
        return False
    return dist.any(wanted)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states(gens: dict[str, torch.Generator]) -> dict:
    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "gens": {k: g.get_state() for k, g in gens.items()}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict, gens: dict[str, torch.Generator]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for k, g in gens.items():
        g.set_state(states["gens"][k])


def run(cfg: dict, data: Dataset, device: torch.device, files: RunFiles, resume: dict | None = None,
        stop: StopFlag | None = None, dist: Dist = Dist()) -> dict:
    """Train one run of ``cfg`` on ``data`` (already on ``device``); return its final record.

    ``resume`` is a checkpoint written by this function; the run then continues exactly where
    the checkpoint left it (same batches, same augmentation, same curves on CPU). Under torchrun
    (``dist``) every rank calls this; only the main rank writes files.
    """
    seed_everything(cfg["seed"])
    model = build_model(cfg["arch"], data.num_classes, in_channels=data.train_x.shape[1],
                        image_size=data.train_x.shape[-1], emb_dim=cfg.get("emb_dim") or None).to(device)
    emb_mode = cfg["mode"] == "emb"  # E is part of the method: snapshots of it are written
    two_heads = uses_head2(cfg)  # the step computes head 2 and E[y]
    if cfg.get("init_emb") and resume is None:  # on resume E comes from the checkpoint
        with torch.no_grad():
            model.emb.weight.copy_(load_init_emb(cfg["init_emb"], data.num_classes))
    if cfg.get("freeze_emb"):
        model.emb.weight.requires_grad_(False)
    # Opt-in speed (the defaults are the paper's fp32 recipe).
    amp_dtype = torch.bfloat16 if cfg.get("amp") else None
    if cfg.get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
        data.channels_last = True
    net = model
    if dist.active:  # baseline, ls, ols and --freeze-emb leave head 2 and E out of the graph: tell DDP so
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None, find_unused_parameters=not two_heads)
    fwd = torch.compile(net) if cfg.get("compile") else net  # checkpoints use `model` itself
    # Evaluation runs on a shard per rank without DDP (its forward would need every rank in step).
    eval_fwd = model if dist.active else fwd
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the authors' CIFAR code
    # Adam over every parameter, E included (in baseline E and head 2 get no gradient, so Adam skips them).
    optimizer = make_optimizer(model, cfg)
    every = cfg["lr_decay_every"]
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=every or 1,
                                                gamma=cfg["lr_decay"] if every else 1.0)
    gens = {"data": torch.Generator().manual_seed(cfg["seed"] + 1)}
    gens["aug"] = gens["data"] if device.type == "cpu" else torch.Generator(device=device)
    if device.type != "cpu":
        gens["aug"].manual_seed(cfg["seed"] + 2)

    sched = Schedule.of(cfg, len(data.train_y))
    n_eval = DRY_RUN_EVAL if cfg["dry_run"] else None
    held_out = [("val", data.val_x, data.val_y), ("test", data.test_x, data.test_y)]
    held_out = [(k, x[:n_eval], y[:n_eval]) for k, x, y in held_out if y is not None]

    # Everything that changes during training; a checkpoint is exactly this plus the modules.
    st = dict(epoch=0, step=0, perm=None, curve=[], epoch_seconds=[], train_seconds=0.0,
              epoch_start_seconds=0.0, embeddings=[], seen=0)
    acc = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct since the last evaluation
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        set_rng_states(resume["rng"], gens)
        st.update({k: resume[k] for k in st})
        if dist.main:  # the checkpoint holds the sums of all ranks: one rank carries them on
            acc.copy_(resume["acc"])
    criterion = make_criterion(cfg, model).to(device)  # after the resume: --freeze-emb reads E
    if resume is not None and hasattr(criterion, "load_checkpoint_state"):  # ols: S and the epoch's sums
        criterion.load_checkpoint_state(resume["criterion"], carry_sums=dist.main)
    snapshot = embedding_matrix(model.emb) is not None  # (False only for a big compressed E)

    record = {"format": RECORD_FORMAT, "status": "running", "task": cfg["task"], "arch": cfg["arch"],
              "dataset": cfg["dataset"], "mode": cfg["mode"], "num": cfg["num"], "seed": cfg["seed"],
              "dry_run": cfg["dry_run"], "config": cfg, "env": environment(device), "classes": data.classes,
              "steps_per_epoch": sched.steps, "curve": st["curve"], "epoch_seconds": st["epoch_seconds"],
              "embedding_file": files.emb.name if emb_mode and snapshot else None}
    if emb_mode and not snapshot:
        record["embedding_note"] = (f"compressed embedding of {data.num_classes} classes: per-epoch snapshots of "
                                    f"E not written (only up to {SNAPSHOT_MAX_CLASSES} classes)")

    def checkpoint() -> None:
        total = dist.sum_(acc.clone())  # every rank takes part; the main one writes
        extra = {}
        if hasattr(criterion, "checkpoint_state"):  # ols: S and the epoch's sums (over all ranks)
            extra["criterion"] = {k: v.cpu() for k, v in criterion.checkpoint_state(dist).items()}
        if dist.main:
            files.save_checkpoint({
                "format": CKPT_FORMAT, "config": cfg, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_states(gens), "acc": total.cpu(), **st, **extra})

    def finish_record(status: str, **extra) -> dict:
        secs = st["epoch_seconds"]
        record.update(status=status, time_per_epoch=float(np.mean(secs)) if secs else None,
                      train_seconds=st["train_seconds"], reported=reported_metric(st["curve"], cfg["reported"]),
                      **extra)
        if dist.main:
            files.write_record(record)
        return record

    def pause_clock() -> None:
        """Stop the training clock (evaluation and writing are not training time); check the loss."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        st["train_seconds"] += time.perf_counter() - t0
        bad = int(dist.max_(first_bad.clone()))
        if bad >= 0:
            msg = (f"non-finite loss at step {bad} (epoch {(bad - 1) // sched.steps + 1}, step "
                   f"{(bad - 1) % sched.steps + 1} of it); stopped, the last good checkpoint is kept")
            finish_record("failed", error=msg)
            raise RunFailed(msg)

    def evaluation_point(epoch: int) -> None:
        loss_sum, correct = dist.sum_(acc.clone()).tolist()
        row = {"epoch": round(epoch + st["step"] / sched.steps, 6), "step": epoch * sched.steps + st["step"],
               "train_acc": correct / st["seen"], "train_loss": loss_sum / st["seen"], "val_acc": None}
        for name, hx, hy in held_out:
            a, loss = evaluate(eval_fwd, data, hx, hy, cfg["test_batch_size"], amp_dtype, dist)
            row[f"{name}_acc"] = a
            if name == "test":
                row.update(test_loss=loss, test_error_pct=100.0 * (1.0 - a))
        row["train_seconds"] = st["train_seconds"]
        st["curve"].append(row)
        acc.zero_()
        st["seen"] = 0
        bar.set_postfix_str(f"test err {row['test_error_pct']:.2f}%", refresh=False)
        if not cfg["quiet"] and dist.main and st["step"] == sched.steps:
            val = f" val acc {row['val_acc']:.4f}" if row["val_acc"] is not None else ""
            bar.write(f"epoch {epoch + 1}/{cfg['epochs']}: train loss {row['train_loss']:.4f} "
                      f"acc {row['train_acc']:.4f}{val} test acc {row['test_acc']:.4f} "
                      f"loss {row['test_loss']:.4f} ({st['train_seconds']:.1f}s training)")

    model.train()
    done = st["epoch"] * sched.steps + st["step"]
    bar = tqdm(total=cfg["epochs"] * sched.steps, initial=done, disable=cfg["quiet"] or not dist.main, unit="step",
               dynamic_ncols=True, mininterval=1.0,
               desc=f"{cfg['dataset']} {cfg['arch']} {cfg['mode']} #{cfg['num']}")
    step_counter = torch.full((), done, dtype=torch.long, device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first global step with a non-finite loss
    bs = cfg["batch_size"]
    try:
        t0 = time.perf_counter()
        while st["epoch"] < cfg["epochs"]:
            epoch = st["epoch"]
            if st["step"] == 0:
                st["perm"] = torch.randperm(len(data.train_y), generator=gens["data"])
                st["epoch_start_seconds"] = st["train_seconds"]
            perm = st["perm"].to(device)
            for s in range(st["step"], sched.steps):
                idx = perm[s * bs:(s + 1) * bs]  # the global batch; under DDP this rank takes a shard
                x, y = data.train_batch(idx, gens["aug"], dist.shard(len(idx)) if dist.active else None)
                loss, o1 = train_step(fwd, criterion, optimizer, x, y, two_heads, amp_dtype,
                                      len(idx) if dist.active else None)
                # Metrics accumulate on the device and are read at evaluation points: no sync per step.
                step_counter += 1
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step_counter, first_bad)
                # loss * len(idx) / world summed over ranks is the global batch's loss sum
                acc += torch.stack([loss.double() * (len(idx) / dist.world), (o1.argmax(1) == y).sum().double()])
                st["seen"] += len(idx)
                st["step"] = s + 1
                bar.update(1)
                stopping = stop_agreed(stop, dist, st["step"], st["step"] in sched.eval_at)
                if st["step"] in sched.eval_at or stopping:
                    pause_clock()
                    if st["step"] in sched.eval_at:
                        evaluation_point(epoch)
                    if st["step"] < sched.steps:
                        if stopping:
                            checkpoint()
                            finish_record("interrupted")
                            raise Interrupted(stop.requested)
                        finish_record("running")
                        t0 = time.perf_counter()
            # End of the epoch (the clock is paused: the last step is always an evaluation point).
            scheduler.step()
            st["epoch_seconds"].append(st["train_seconds"] - st["epoch_start_seconds"])
            if hasattr(criterion, "end_epoch"):  # ols: S becomes this epoch's mean correct outputs
                criterion.end_epoch(dist)
            if emb_mode and snapshot:
                st["embeddings"].append(embedding_matrix(model.emb).float().cpu().numpy().copy())
                if dist.main:
                    files.write_embedding(st["embeddings"])
            st.update(epoch=epoch + 1, step=0, perm=None)
            checkpoint()
            if st["epoch"] < cfg["epochs"]:
                if stop_agreed(stop, dist, 0, True):
                    finish_record("interrupted")
                    raise Interrupted(stop.requested)
                finish_record("running")
            t0 = time.perf_counter()
    finally:
        bar.close()
    record = finish_record("complete")
    if dist.main:
        files.write_plot(record)
        files.prev_ckpt.unlink(missing_ok=True)  # the last checkpoint (the trained model) is kept
    return record
