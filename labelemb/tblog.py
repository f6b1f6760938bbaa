"""TensorBoard logging of a run (opt-in: ``--tensorboard [DIR]``; ``pip install .[tensorboard]``).

At every evaluation point: accuracy and loss of the training batches since the last point, of
the validation set (where the recipe holds one out) and of the test set, and the learning rate;
in emb mode once per epoch the soft targets softmax(E) as a grey image (row: label, column: the
class its mass goes to; white = 1); at the end the run's settings as hyper-parameters with its
reported test error. The step is the global training step, as in the record's curve.

A resumed run opens the same folder with ``purge_step`` = the checkpoint's step + 1, so points
logged after that checkpoint by the interrupted process are hidden, not shown twice. A run that
replaces an earlier one (``--overwrite``) holds its log back until its first checkpoint, as it holds
its record (see :class:`labelemb.results.RunFiles`): stopped before that, it leaves the earlier
run's log as it was; at that checkpoint the earlier run's event files go with its other files.

Logging is a side show: if writing the log fails (a full disk), one warning is printed and the
run goes on without it (under torchrun the other ranks would otherwise wait for rank 0 forever).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
import time
from pathlib import Path

import torch

from .errors import UserError
from .results import atomic_write

INSTALL_HINT = "pip install tensorboard (or pip install .[tensorboard])"
IMAGE_SIDE = 256  # pixels the soft-target image is scaled up to, about (one label: several pixels)
OWNER_FILE = "labelemb_run.txt"  # in a --tensorboard DIR/<run> folder: the record whose log it is


def claim(logdir: str | os.PathLike, record: str | os.PathLike) -> None:
    """Make ``logdir`` the log of the run whose record is ``record``, or UserError when it is another
    run's. Runs of one name in two results folders given one ``--tensorboard DIR`` share
    ``DIR/<run>``: the second would hide the first's points (``purge_step``) beside its
    hyper-parameters, and an ``--overwrite`` of it would delete them. Paths are compared resolved
    (``..``, links); a claim whose run is gone (its record and lock: a folder moved or deleted) is
    taken over. The default folder, ``<results-dir>/<run>_tensorboard``, is its run's alone: not
    claimed. One process of a torchrun job calls this (it writes)."""
    logdir, record = Path(os.path.realpath(logdir)), Path(os.path.realpath(record))
    if logdir.parent == record.parent:
        return
    owner_file = logdir / OWNER_FILE
    try:
        owner = owner_file.read_text().strip()
    except FileNotFoundError:
        owner = ""
    except OSError as e:
        raise UserError(f"cannot read {owner_file} ({e.strerror or e}); choose another --tensorboard DIR") from None
    if owner == str(record):
        return
    lock = Path(owner).with_suffix(".lock") if owner else None  # present while its run trains
    if owner and (Path(owner).exists() or lock.exists()):
        raise UserError(f"{logdir} holds the TensorBoard log of {owner}, not of {record}: the two runs would mix "
                        f"their logs; give this run another --tensorboard DIR (or delete {logdir} if that log can go)")
    logdir.mkdir(parents=True, exist_ok=True)
    atomic_write(owner_file, f"{record}\n".encode())  # whole or not at all, for a process reading it now


def available() -> bool:
    """Whether the tensorboard package is installed (torch.utils.tensorboard needs it)."""
    return importlib.util.find_spec("tensorboard") is not None


def open_log(logdir: str | None, purge_step: int, hold: bool = False):
    """A context giving a :class:`TensorBoardLog` of ``logdir``, or None when ``logdir`` is None."""
    return contextlib.nullcontext() if logdir is None else TensorBoardLog(logdir, purge_step, hold)


def _best_effort(method):
    """Run ``method`` unless an earlier write failed (or keep it for :meth:`TensorBoardLog.release` while
    the log is held back); an OSError disables the log with one warning."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.failed:
            return None
        if self.held is not None:  # with the time it was logged at, for TensorBoard's time axes
            self.held.append((time.time(), functools.partial(wrapper, self, *args, **kwargs)))
            return None
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            self.failed = True
            print(f"warning: TensorBoard log {self.logdir} not written any more ({e.strerror or e}); "
                  "the run goes on", file=sys.stderr)
        return None
    return wrapper


class TensorBoardLog:
    """``hold``: write nothing (no event file) until :meth:`release`, then what was logged until then,
    each with the time it was logged at."""

    def __init__(self, logdir: str, purge_step: int, hold: bool = False):
        self.logdir, self.purge_step, self.failed = logdir, purge_step, False
        self.writer = None
        self.held: list | None = [] if hold else None  # (time logged, call) while held back
        self.walltime: float | None = None  # the time of the held call being written, else now
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}") from None
        if hold:
            self._open()  # held back like any write: the event file is made at release
        else:
            self.writer = SummaryWriter(logdir, purge_step=purge_step)

    @_best_effort
    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.logdir, purge_step=self.purge_step)

    def release(self) -> None:
        """Open the log and write what was held back (nothing if it was not held)."""
        held, self.held = self.held, None
        try:
            for t, call in held or ():
                self.walltime = t
                call()
        finally:
            self.walltime = None

    @_best_effort
    def point(self, row: dict, losses: dict[str, float], lr: float) -> None:
        """One evaluation point: ``row`` as in the record's curve, ``losses`` per held-out set."""
        step = row["step"]
        for split in ("train", "val", "test"):
            if row.get(f"{split}_acc") is not None:
                self.writer.add_scalar(f"accuracy/{split}", row[f"{split}_acc"], step, self.walltime)
        for split, loss in (("train", row["train_loss"]), *losses.items()):
            self.writer.add_scalar(f"loss/{split}", loss, step, self.walltime)
        self.writer.add_scalar("learning_rate", lr, step, self.walltime)
        self.writer.flush()

    @_best_effort
    def soft_targets(self, S: torch.Tensor, step: int) -> None:
        """The soft targets softmax(E) (n x n, rows are labels) as a grey image of about IMAGE_SIDE pixels."""
        S = S.detach().float().cpu()
        k = max(1, IMAGE_SIDE // S.shape[0])
        self.writer.add_image("soft_targets", S.repeat_interleave(k, 0).repeat_interleave(k, 1)[None], step,
                              self.walltime, dataformats="CHW")
        self.writer.flush()

    @_best_effort
    def finish(self, settings: dict, reported: dict) -> None:
        """The run's settings as hyper-parameters, with its reported test error as their metric."""
        from torch.utils.tensorboard.summary import hparams

        hp = {k: v for k, v in settings.items() if isinstance(v, (bool, int, float, str))}  # None: not a value
        metric = {"hparam/test_error_pct": reported["test_error_pct"]}
        for summary in hparams(hp, metric):
            self.writer.file_writer.add_summary(summary, walltime=self.walltime)
        self.writer.add_scalar("hparam/test_error_pct", reported["test_error_pct"], reported["step"], self.walltime)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is None:  # held back to the end (stopped before the first checkpoint), or failed to open
            return
        try:
            self.writer.close()
        except OSError:
            pass  # already warned about, or nothing left to lose

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
