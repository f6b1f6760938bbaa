"""The training loop shared by the four recipes.

How a run flows: :func:`build` turns a :class:`~labelemb.config.Config` into the parts of a run
(the network and its DDP/compile wrappers, optimiser, scheduler, the mode's loss, generators),
restored from a checkpoint when one is given. A :class:`Run` holds those parts with where the run
stands; :meth:`Run.train` trains from one evaluation point to the next (each step one
:func:`train_step`), evaluates there (:func:`evaluate`), rewrites the record, and at the end of
every epoch snapshots E (where the mode learns one) and writes a checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import modes
from .config import Config
from .dataset import Dataset
from .device import configure, precision
from .distributed import Dist
from .embedding import CompressedLabelEmbedding
from .errors import UserError
from .interrupt import Interrupted, RunFailed, StopFlag, stop_agreed
from .models import LabelEmbNet, build_model
from .modes import StatefulLoss
from .results import RECORD_FORMAT, RunFiles, environment, reported_metric
from .rng import Generators, make_generators, rng_states, seed_everything, set_rng_states
from .tblog import open_log

CKPT_FORMAT = "labelemb-ckpt/1"
DRY_RUN_STEPS = 3  # --dry-run: this many training steps of one epoch ...
DRY_RUN_EVAL = 500  # ... evaluated on at most this many samples per held-out set
SNAPSHOT_MAX_CLASSES = 1000  # --emb-dim: per-epoch n x n snapshots of E only up to this many classes


# ----------------------------------------------------------------------------- the parts of a run
def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's Adam (betas 0.9/0.999, eps 1e-8, no weight decay) over every parameter.

    The fused implementation (CUDA; CPU since torch 2.4) is the same update in one kernel for
    all parameters instead of about ten small ops per parameter, which on a CPU dominated the
    MLP's step; it differs from the per-parameter loop only in floating-point rounding.
    """
    dev = next(model.parameters()).device.type
    fused = dev == "cuda" or (dev == "cpu" and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4))
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                            fused=fused or None)


def make_criterion(cfg: Config, model: LabelEmbNet | None = None) -> nn.Module:
    """The loss of ``cfg.mode`` (the mode's declaration makes it); ``model``: for the modes whose loss
    reads it (``ols``: its class count; ``--freeze-emb``: the fixed E, read when the loss is made)."""
    return modes.get(cfg.mode).loss(cfg, model)


@contextlib.contextmanager
def restoring(what: str):
    """A checkpoint part that does not fit the run being built: one line (UserError), not a traceback."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the checkpoint's {what} does not fit this run ({type(e).__name__}: {first[:200]}); "
                        "resume with --resume previous, or start the run anew with --overwrite") from None


def missing_parts(checkpoint: dict) -> list[str]:
    """What a checkpoint lacks of what :func:`run` needs to continue it."""
    return [k for k in CHECKPOINT_PARTS if k not in checkpoint]


@dataclass
class Parts:
    """What :func:`build` makes for a run."""

    model: LabelEmbNet  # the network itself: checkpoints and E snapshots read it
    train_net: nn.Module  # what a training step calls: the model, or its DDP / compiled wrapper
    eval_net: nn.Module  # what evaluation calls (never DDP: each rank evaluates its shard alone)
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gens: Generators
    amp_dtype: torch.dtype | None  # bf16 autocast (--amp), None for fp32


def build(cfg: Config, data: Dataset, device: torch.device, dist: Dist = Dist(),
          checkpoint: dict | None = None) -> Parts:
    """The parts of run ``cfg`` for ``data``'s classes and image shape, on ``device``.

    With ``checkpoint`` (written by :func:`run`) they continue it: weights, optimiser, scheduler,
    generators and the loss's state are restored. Without one, the weights are initialised from
    ``cfg.seed`` as SPEC §2 says, and the mode may prepare the model (emb: E from ``--init-emb``).
    """
    mode = modes.get(cfg.mode)
    configure(device, tf32=cfg.tf32)
    seed_everything(cfg.seed)
    model = build_model(cfg.arch, data.num_classes, in_channels=data.train_x.shape[1],
                        image_size=data.train_x.shape[-1], bn_init=cfg.bn_init, **mode.model_options(cfg)).to(device)
    if checkpoint is not None:
        with restoring("model"):
            model.load_state_dict(checkpoint["model"])
    if mode.prepare_model is not None:
        mode.prepare_model(cfg, model, checkpoint is not None)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_net = model
    if dist.active:  # a loss on head 1 only leaves head 2 and E out of the graph: tell DDP so
        train_net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=not cfg.two_heads)
    if cfg.compile:
        train_net = torch.compile(train_net)
    # Adam over every parameter, E included (in baseline E and head 2 get no gradient, so Adam skips them).
    optimizer = make_optimizer(model, cfg.lr)
    every = cfg.lr_decay_every
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=every or 1, gamma=cfg.lr_decay if every else 1.0)
    gens = make_generators(cfg.seed, device)
    criterion = make_criterion(cfg, model).to(device)  # after the weights: --freeze-emb reads E
    if checkpoint is not None:
        with restoring("optimiser, scheduler, random generators or loss state"):
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_states(checkpoint["rng"], gens)
            if isinstance(criterion, StatefulLoss):  # e.g. ols: S and the epoch's sums, counted on one rank
                criterion.load_checkpoint_state(checkpoint["criterion"], carry_sums=dist.main)
    model.train()
    return Parts(model=model, train_net=train_net, eval_net=model if dist.active else train_net,
                 criterion=criterion, optimizer=optimizer, scheduler=scheduler, gens=gens,
                 amp_dtype=torch.bfloat16 if cfg.amp else None)


# ----------------------------------------------------------------------------- one step, one evaluation
def train_step(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
               batch: tuple[torch.Tensor, torch.Tensor], two_heads: bool, amp_dtype: torch.dtype | None = None,
               global_batch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on ``batch`` = (x, y); returns the (detached) loss and head-1 logits,
    without a host sync.

    ``model`` is a :class:`LabelEmbNet` or a wrapper of one (torch.compile, DDP); ``two_heads``:
    the step computes head 2 and E[y] for the loss too (the mode says; LabelEmb with a learned E).
    With ``amp_dtype`` the forward runs under autocast, the loss in fp32 (the criteria cast).
    ``global_batch`` (under DDP) is the batch size of all ranks together, see the criteria.
    """
    x, y = batch
    kw = {} if global_batch is None else {"global_batch": global_batch}
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(x, y) if two_heads else model(x)
    if two_heads:
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


# ----------------------------------------------------------------------------- a run's state
@dataclass
class Schedule:
    """Steps per epoch and the steps (1-based, within an epoch) after which we evaluate."""

    steps: int
    eval_at: tuple[int, ...]

    @classmethod
    def of(cls, cfg: Config, n_train: int) -> "Schedule":
        bs = cfg.batch_size
        steps = n_train // bs if cfg.drop_last else math.ceil(n_train / bs)
        if steps < 1:
            raise UserError(f"--batch-size {bs} is larger than the {n_train} training samples; use a smaller one")
        if cfg.dry_run:
            steps = min(steps, DRY_RUN_STEPS)
        k = min(cfg.evals_per_epoch, steps)
        return cls(steps, tuple(sorted({round(i * steps / k) for i in range(1, k + 1)})))

    def next_point(self, step: int) -> int:
        """The first evaluation point after ``step`` (the epoch's last step is always one)."""
        return next(s for s in self.eval_at if s > step)


@dataclass
class RunState:
    """Where a run stands. A checkpoint holds these fields under their names, with the device sums
    (:class:`Meter`) and the modules' states."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps done in the current epoch
    perm: torch.Tensor | None = None  # the current epoch's order of the training images
    curve: list[dict] = field(default_factory=list)  # one row per evaluation point
    epoch_seconds: list[float] = field(default_factory=list)
    train_seconds: float = 0.0  # training time so far, evaluation and writing excluded
    epoch_start_seconds: float = 0.0
    embeddings: list[np.ndarray] = field(default_factory=list)  # E after each epoch (emb mode)
    seen: int = 0  # training images since the last evaluation point

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "RunState":
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls)})


# What a checkpoint holds besides the run's state (save_checkpoint writes these; "criterion" for ols).
CHECKPOINT_PARTS = ("config", "model", "optimizer", "scheduler", "rng", "acc", *(f.name for f in fields(RunState)))


class Meter:
    """Training loss and accuracy since the last evaluation point, summed on the device so that no
    step waits for the host, and the first global step whose loss was not finite."""

    def __init__(self, device: torch.device, steps_done: int, sums: torch.Tensor | None = None):
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
        if sums is not None:
            self.sums.copy_(sums)
        self.step = torch.full((), steps_done, dtype=torch.long, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, loss: torch.Tensor, o1: torch.Tensor, y: torch.Tensor, batch: int, world: int) -> None:
        self.step += 1
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss), self.step, self.first_bad)
        # loss * batch / world summed over ranks is the global batch's loss sum
        self.sums += torch.stack([loss.double() * (batch / world), (o1.argmax(1) == y).sum().double()])

    def total(self, dist: Dist) -> torch.Tensor:
        """The sums over all ranks (every rank must call this)."""
        return dist.sum_(self.sums.clone())

    def take(self, dist: Dist) -> tuple[float, float]:
        """(loss sum, correct) over all ranks, then start again from zero."""
        loss_sum, correct = self.total(dist).tolist()
        self.sums.zero_()
        return loss_sum, correct

    def nonfinite_error(self, dist: Dist, steps_per_epoch: int, kept: str) -> str | None:
        """The message when a loss was not finite, None otherwise; ``kept`` says what remains."""
        bad = int(dist.max_(self.first_bad.clone()))
        if bad < 0:
            return None
        return (f"non-finite loss at step {bad} (epoch {(bad - 1) // steps_per_epoch + 1}, step "
                f"{(bad - 1) % steps_per_epoch + 1} of it); stopped, {kept}")


class Clock:
    """Training time: it runs between evaluation points (evaluation and writing are not training)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.start()

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0


def embedding_matrix(emb: nn.Module) -> torch.Tensor | None:
    """E as an n x n matrix for the per-epoch snapshot, or None when it is too big to write
    (a compressed embedding of more than SNAPSHOT_MAX_CLASSES classes)."""
    if isinstance(emb, CompressedLabelEmbedding):
        return emb.matrix() if emb.proj.out_features <= SNAPSHOT_MAX_CLASSES else None
    return emb.weight.detach()


def held_out_sets(data: Dataset, limit: int | None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """("val", x, y) where the recipe holds out validation images, and ("test", x, y); ``limit``
    keeps the first images only (--dry-run)."""
    sets = [("val", data.val_x, data.val_y), ("test", data.test_x, data.test_y)]
    return [(name, x[:limit], y[:limit]) for name, x, y in sets if y is not None]


# ----------------------------------------------------------------------------- a run
def run(cfg: Config, data: Dataset, device: torch.device, files: RunFiles, resume: dict | None = None,
        stop: StopFlag | None = None, dist: Dist = Dist()) -> dict:
    """Train one run of ``cfg`` on ``data`` (already on ``device``); return its final record.

    ``resume`` is a checkpoint written by this function; the run then continues exactly where
    the checkpoint left it (same batches, same augmentation, same curves on CPU). Under torchrun
    (``dist``) every rank calls this; only the main rank writes files.
    """
    return Run(cfg, data, device, files, resume, stop, dist).train()


class Run:
    """One run in progress: its settings, data and parts (:func:`build`), where it stands
    (:class:`RunState`, :class:`Meter`), its record and outputs. :meth:`train` is the loop; the
    other methods are its pieces."""

    def __init__(self, cfg: Config, data: Dataset, device: torch.device, files: RunFiles,
                 resume: dict | None = None, stop: StopFlag | None = None, dist: Dist = Dist()):
        self.cfg, self.device, self.files, self.stop, self.dist = cfg, device, files, stop, dist
        self.parts = build(cfg, data, device, dist, checkpoint=resume)
        if dist.main:
            files.dir.mkdir(parents=True, exist_ok=True)
        self.data = data.with_channels_last() if cfg.channels_last else data
        self.sched = Schedule.of(cfg, len(data.train_y))
        self.state = RunState() if resume is None else RunState.from_checkpoint(resume)
        # the checkpoint holds the sums of all ranks: one rank carries them on
        self.meter = Meter(device, self.steps_done, resume["acc"] if resume and dist.main else None)
        self.held_out = held_out_sets(data, DRY_RUN_EVAL if cfg.dry_run else None)
        # E after every epoch, where the mode learns one (not for a big compressed E)
        self.snapshot = modes.get(cfg.mode).snapshots_embedding and embedding_matrix(self.parts.model.emb) is not None
        self.record = self.new_record()
        self.perm = None  # state.perm on the data's device (copied there once per epoch)
        self.tb = None  # the TensorBoard log while training, if any

    @property
    def steps_done(self) -> int:
        return self.state.epoch * self.sched.steps + self.state.step

    def train(self) -> dict:
        """Train to the end (or a stop); the final record."""
        cfg, state, sched, dist = self.cfg, self.state, self.sched, self.dist
        # a resumed TensorBoard log hides what the interrupted process logged after its checkpoint; one
        # replacing an earlier run (--overwrite) writes nothing before its first checkpoint, as its record
        with tqdm(total=cfg.epochs * sched.steps, initial=self.steps_done, unit="step", dynamic_ncols=True,
                  disable=cfg.quiet or not dist.main, mininterval=1.0,
                  desc=f"{cfg.dataset} {cfg.arch} {cfg.mode} #{cfg.num}") as bar, \
                open_log(cfg.tensorboard if dist.main else None, purge_step=self.steps_done + 1,
                         hold=self.files.replacing) as self.tb:
            clock = Clock(self.device)
            while state.epoch < cfg.epochs:
                if state.step == 0 or self.perm is None:  # a new epoch, or the first steps of a resumed one
                    self.perm = self.epoch_order()
                until = sched.next_point(state.step)
                stopping = self.train_steps(until, bar)
                state.train_seconds += clock.stop()
                error = self.meter.nonfinite_error(dist, sched.steps, self.files.what_is_kept())
                if error:
                    self.write_record("failed", error=error)
                    raise RunFailed(error)
                if state.step == until:
                    self.show_progress(bar, self.evaluation_point())
                if state.step == sched.steps:
                    self.end_epoch()
                    self.save_checkpoint()
                    stopping = state.epoch < cfg.epochs and stop_agreed(self.stop, dist, 0, at_pause=True)
                elif stopping:
                    self.save_checkpoint(epoch_end=False)
                if stopping:
                    self.write_record("interrupted")
                    raise Interrupted(self.stop.requested, self.files.what_is_kept() if self.files.replacing else "")
                if state.epoch < cfg.epochs:
                    self.write_record("running")
                clock.start()
            final = self.write_record("complete")
            if self.tb is not None:
                self.tb.finish(cfg.to_dict(), final["reported"])
        if dist.main:
            self.files.write_plot(final)
            self.files.prev_ckpt.unlink(missing_ok=True)  # the last checkpoint (the trained model) is kept
        return final

    # ------------------------------------------------------------------ the pieces of the loop
    def epoch_order(self) -> torch.Tensor:
        """The epoch's order of the training images, on the data's device: drawn anew at the start of
        an epoch, the checkpoint's when a run resumes inside one."""
        state = self.state
        if state.step == 0:
            state.perm = torch.randperm(len(self.data.train_y), generator=self.parts.gens.data)
            state.epoch_start_seconds = state.train_seconds
        return state.perm.to(self.data.train_y.device)

    def train_steps(self, until: int, bar: tqdm) -> bool:
        """Train from step ``state.step`` of the epoch up to step ``until``; returns True when a stop
        (SIGINT/SIGTERM) was agreed, after the step that saw it."""
        parts, state, dist, bs = self.parts, self.state, self.dist, self.cfg.batch_size
        two_heads = self.cfg.two_heads
        for s in range(state.step, until):
            idx = self.perm[s * bs:(s + 1) * bs]  # the global batch; under DDP this rank takes a shard
            x, y = self.data.train_batch(idx, parts.gens.aug, dist.shard(len(idx)) if dist.active else None)
            loss, o1 = train_step(parts.train_net, parts.criterion, parts.optimizer, (x, y), two_heads,
                                  parts.amp_dtype, len(idx) if dist.active else None)
            self.meter.add(loss, o1, y, len(idx), dist.world)  # on the device: no sync per step
            state.seen += len(idx)
            state.step = s + 1
            bar.update(1)
            if stop_agreed(self.stop, dist, state.step, at_pause=state.step == until):
                return True
        return False

    def evaluation_point(self) -> dict:
        """The curve's row for this point: training metrics since the last one, validation and test."""
        parts, state, steps = self.parts, self.state, self.sched.steps
        loss_sum, correct = self.meter.take(self.dist)
        row = {"epoch": round(state.epoch + state.step / steps, 6), "step": state.epoch * steps + state.step,
               "train_acc": correct / state.seen, "train_loss": loss_sum / state.seen, "val_acc": None}
        losses = {}
        for name, x, y in self.held_out:
            acc, losses[name] = evaluate(parts.eval_net, self.data, x, y, self.cfg.test_batch_size, parts.amp_dtype,
                                         self.dist)
            row[f"{name}_acc"] = acc
            if name == "test":
                row.update(test_loss=losses[name], test_error_pct=100.0 * (1.0 - acc))
        row["train_seconds"] = state.train_seconds
        state.curve.append(row)
        state.seen = 0
        if self.tb is not None:
            self.tb.point(row, losses, parts.optimizer.param_groups[0]["lr"])
        return row

    def show_progress(self, bar: tqdm, row: dict) -> None:
        cfg = self.cfg
        bar.set_postfix_str(f"test err {row['test_error_pct']:.2f}%", refresh=False)
        if self.state.step == self.sched.steps and not cfg.quiet and self.dist.main:
            val = f" val acc {row['val_acc']:.4f}" if row["val_acc"] is not None else ""
            bar.write(f"epoch {math.ceil(row['epoch'])}/{cfg.epochs}: train loss {row['train_loss']:.4f} "
                      f"acc {row['train_acc']:.4f}{val} test acc {row['test_acc']:.4f} "
                      f"loss {row['test_loss']:.4f} ({row['train_seconds']:.1f}s training)")

    def end_epoch(self) -> None:
        """The scheduler's step, the epoch's time, the loss's epoch state, E's snapshot; then the
        state points at the start of the next epoch."""
        parts, state, dist = self.parts, self.state, self.dist
        parts.scheduler.step()
        state.epoch_seconds.append(state.train_seconds - state.epoch_start_seconds)
        if isinstance(parts.criterion, StatefulLoss):  # e.g. ols: S becomes this epoch's mean correct outputs
            parts.criterion.end_epoch(dist)
        if self.snapshot:
            state.embeddings.append(embedding_matrix(parts.model.emb).float().cpu().numpy().copy())
            if dist.main:
                self.files.write_embedding(state.embeddings)
            if self.tb is not None:
                self.tb.soft_targets(parts.model.emb.soft_targets(), (state.epoch + 1) * self.sched.steps)
        state.epoch, state.step, state.perm = state.epoch + 1, 0, None

    def save_checkpoint(self, epoch_end: bool = True) -> None:
        """Everything :func:`build` and :class:`Run` need to continue exactly here, and which data it
        was trained on (a resume must read the same); every rank takes part (the sums are over
        ranks), the main one writes (``epoch_end``: at an epoch's end, not at a stop inside one)."""
        parts, dist = self.parts, self.dist
        extra = {"acc": self.meter.total(dist).cpu()}
        if isinstance(parts.criterion, StatefulLoss):  # e.g. ols: S and the epoch's sums (over all ranks)
            extra["criterion"] = {k: v.cpu() for k, v in parts.criterion.checkpoint_state(dist).items()}
        if dist.main:
            self.files.save_checkpoint({
                "format": CKPT_FORMAT, "config": self.cfg.to_dict(), "data": self.data.source,
                "classes": self.data.classes, "model": parts.model.state_dict(),
                "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
                "rng": rng_states(parts.gens), **extra, **vars(self.state)}, epoch_end=epoch_end)
            if self.tb is not None and not self.files.replacing:  # replacing a run: its log with its files
                self.tb.release()

    def new_record(self) -> dict:
        """The parts of the run's record that do not change while it trains."""
        cfg, data = self.cfg, self.data
        record = {"format": RECORD_FORMAT, "status": "running", "task": cfg.task, "arch": cfg.arch,
                  "dataset": cfg.dataset, "mode": cfg.mode, "num": cfg.num, "seed": cfg.seed, "dry_run": cfg.dry_run,
                  "config": cfg.to_dict(),
                  "env": {**environment(self.device), "precision": precision(self.device, cfg.amp)},
                  "data": data.source, "classes": data.classes, "steps_per_epoch": self.sched.steps, "curve": [],
                  "epoch_seconds": [], "embedding_file": self.files.emb.name if self.snapshot else None}
        if modes.get(cfg.mode).snapshots_embedding and not self.snapshot:
            record["embedding_note"] = (f"compressed embedding of {data.num_classes} classes: per-epoch snapshots "
                                        f"of E not written (only up to {SNAPSHOT_MAX_CLASSES} classes)")
        return record

    def write_record(self, status: str, **extra) -> dict:
        """The record as it stands, written (atomically) by the main rank; returned."""
        state = self.state
        secs = state.epoch_seconds
        out = {**self.record, "status": status, "curve": state.curve, "epoch_seconds": secs,
               "time_per_epoch": float(np.mean(secs)) if secs else None, "train_seconds": state.train_seconds,
               "reported": reported_metric(state.curve, self.cfg.reported), **extra}
        if self.dist.main:
            self.files.write_record(out)
        return out
