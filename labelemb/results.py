"""Everything a run writes: the JSON record, the CSV curve, the PNG, E per epoch, checkpoints.

Every write is atomic (temporary file in the same folder, fsync, rename), so a crash or a
second Ctrl-C leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import UserError

RECORD_FORMAT = "labelemb-run/1"
CURVE_FIELDS = ["epoch", "step", "train_acc", "train_loss", "val_acc", "test_acc", "test_loss",
                "test_error_pct", "train_seconds"]


def reported_metric(curve: list[dict], how: str) -> dict:
    """SPEC §2: the last point's test error (``final``), or (mlp, ``best_val``) the test error at
    the best validation accuracy, ties going to the later point."""
    if not curve:
        return {}
    if how == "best_val":
        best = max(range(len(curve)), key=lambda i: (curve[i]["val_acc"], i))
        row, name = curve[best], "test error at best validation accuracy"
    else:
        row, name = curve[-1], "final test error"
    return {"metric": how, "description": name, "test_error_pct": row["test_error_pct"],
            "epoch": row["epoch"], "step": row["step"]}


TENSORBOARD_EVENTS = "events.out.tfevents.*"  # the names torch.utils.tensorboard gives its event files
FINISHED = ("complete", "failed")  # a run's own verdicts (failed: a non-finite loss): a sweep does not train it again
# Temporary files being written now: a second Ctrl-C exits at once (os._exit) and removes these first.
IN_PROGRESS: set[str] = set()
_UMASK: list[int] = []


def _file_mode() -> int:
    """0o666 less the process's umask, as open() would give (mkstemp's own 0o600 would make a results
    folder shared on a cluster unreadable to colleagues). The umask is read once."""
    if not _UMASK:
        _UMASK.append(os.umask(0o022))
        os.umask(_UMASK[0])
    return 0o666 & ~_UMASK[0]


def atomic_write(path: Path, data: bytes, keep_previous: Path | None = None,
                 before_replace: Callable[[], None] | None = None) -> None:
    """Write via a temporary file, fsync, rename; the old file becomes ``keep_previous`` if given.
    ``before_replace`` runs once the data are safely on disk, just before the rename.

    The temporary file is removed on every failure; an OSError names ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    IN_PROGRESS.add(tmp)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        if keep_previous is not None and path.exists():
            _keep_as(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and not e.filename:  # a write on a descriptor names no file: say which
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    finally:
        IN_PROGRESS.discard(tmp)


def _keep_as(path: Path, previous: Path) -> None:
    """``previous`` becomes a second name of ``path``'s file (a hard link), so that ``path`` is never
    missing, whenever a process dies; a rename where the file system has no hard links."""
    previous.unlink(missing_ok=True)
    try:
        os.link(path, previous)
    except OSError:
        os.replace(path, previous)


def remove_in_progress() -> None:
    """Remove the temporary files being written now (before an immediate exit)."""
    for tmp in list(IN_PROGRESS):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _json_safe(obj):
    """NaN/inf (a diverged run's test loss) become null: strict JSON that every reader accepts."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def json_bytes(obj) -> bytes:
    return (json.dumps(_json_safe(obj), indent=1, allow_nan=False) + "\n").encode()


def write_json(path: Path, obj) -> None:
    atomic_write(path, json_bytes(obj))


def read_record(path: Path) -> dict:
    """A run record, or UserError naming the file when it is unreadable or not a record."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable run record ({e})") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise UserError(f"{path} is not a labelemb run record (no format {RECORD_FORMAT!r})")
    return rec


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    """Versions, the device, and (CUDA) the TF32 flags and cuDNN in effect; the process group if any."""
    import torch

    from .device import tf32_state

    # torchvision's version as pip has it: importing torchvision (its ops pull in torch._dynamo) costs
    # seconds per process, and a run reads no torchvision code.
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": metadata.version("torchvision"), "numpy": np.__version__,
           "platform": platform.platform(), "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["tf32_allowed"] = tf32_state()
    else:
        env["device_name"] = _cpu_name()
    env["cpu_count"] = os.cpu_count()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        env["distributed"] = {"backend": torch.distributed.get_backend(),
                              "world_size": torch.distributed.get_world_size()}
    return env


class RunLocked(UserError):
    """Another live process holds this run's lock."""


class RunFiles:
    """The files of one run: ``<dir>/<stem>.{json,csv,png,ckpt,lock}`` and ``<stem>_emb.npy``.

    One process per run: :meth:`acquire_lock` takes an exclusive ``flock`` on ``<stem>.lock``,
    which the operating system releases when its holder dies (however it dies; no pid check, so a
    pid reused after a restart cannot block the run). The file holds the holder's pid, for the
    message only.

    A run that replaces earlier work (``--overwrite`` of a run with a checkpoint or a complete
    record) calls :meth:`replace_on_first_checkpoint`: its record, curve and E are then held back
    (its TensorBoard log too, by :mod:`labelemb.tblog`), and the earlier run's files left as they
    are, until it writes its first end-of-epoch checkpoint; only then are they replaced. A run that
    fails or is stopped before that (bad settings, a diverged loss, Ctrl-C in its first epoch)
    loses nothing of the earlier one.
    """

    def __init__(self, results_dir: str | os.PathLike, stem: str):
        self.dir = Path(results_dir)
        self.stem = stem
        self.record = self.dir / f"{stem}.json"
        self.csv = self.dir / f"{stem}.csv"
        self.png = self.dir / f"{stem}.png"
        self.emb = self.dir / f"{stem}_emb.npy"
        self.ckpt = self.dir / f"{stem}.ckpt"
        self.prev_ckpt = self.dir / f"{stem}.ckpt.prev"
        self.lock = self.dir / f"{stem}.lock"
        self._lock_fd: int | None = None
        self._held: dict | None = None  # writes waiting for the first checkpoint (replacing a run)
        self._earlier_log: Path | None = None  # the TensorBoard folder whose earlier event files go then

    def check_writable(self) -> None:
        """Fail before training, not after hours of it, when results cannot be written."""
        check_writable_folder(self.dir, "results", "--results-dir")

    def status(self) -> str | None:
        """'complete', 'running', 'failed', ... from the record, None if there is none."""
        if not self.record.exists():
            return None
        try:
            return read_record(self.record).get("status")
        except UserError:
            return "unreadable"

    # ------------------------------------------------------------------ lock
    def acquire_lock(self) -> None:
        """Take the run's lock, or RunLocked naming its holder and the lock file."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, _file_mode())
            try:
                _flock_exclusive(fd)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise RunLocked(self.locked_message(pid)) from None
            except OSError as e:  # a file system without flock (some network mounts)
                os.close(fd)
                raise UserError(f"cannot lock {self.lock} ({e.strerror or e}): the file system of {self.dir} does not "
                                "support flock; choose a --results-dir on a local or flock-capable file system") from None
            try:  # the holder before us may have removed the file after we opened it: lock the one in place
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        self.remove_stale_temporaries()

    def locked_message(self, pid: int | None) -> str:
        who = f"process {pid}" if pid else "another process"
        return (f"run {self.stem} in {self.dir} is being trained by {who} now (lock {self.lock}); wait for it "
                "to finish, or use another --num")

    def holder(self) -> int | None:
        """The pid of the live process holding the lock (0 if it wrote none), None if nobody else does."""
        if self._lock_fd is not None:  # we hold it (a second open file would conflict with our own lock)
            return None
        try:
            fd = os.open(self.lock, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        finally:
            os.close(fd)  # also drops the probe's shared lock
        return None

    def release_lock(self) -> None:
        if self._lock_fd is None:
            return
        self.lock.unlink(missing_ok=True)  # while still holding it: a waiter re-checks the path
        os.close(self._lock_fd)
        self._lock_fd = None

    def remove_stale_temporaries(self) -> None:
        """Temporary files of this run left by a process that was killed while writing (holding the lock,
        no other process is writing them)."""
        for tmp in self.dir.glob(f".{self.stem}[._]*.tmp"):
            if str(tmp) not in IN_PROGRESS:
                tmp.unlink(missing_ok=True)

    def has_work(self) -> bool:
        """Whether this run's folder holds work to keep: a checkpoint, or a complete record (a record of
        a run that stopped before its first checkpoint holds nothing to go back to)."""
        return self.ckpt.exists() or self.prev_ckpt.exists() or self.status() == "complete"

    def mark_stopped(self, error: str) -> None:
        """Best effort, after a failed write: a record that says "running" says "interrupted" and why."""
        if self._held is not None or self.status() != "running":
            return
        try:
            write_json(self.record, {**read_record(self.record), "status": "interrupted", "error": error})
        except (OSError, UserError):
            pass

    @property
    def replacing(self) -> bool:
        """Whether the earlier run's files are still held as they were (see the class)."""
        return self._held is not None

    def what_is_kept(self) -> str:
        """For a run that stops: what it leaves to go back to."""
        if self._held is not None:
            return "the earlier run's files are kept as they were"
        if self.ckpt.exists():
            return f"the last good checkpoint {self.ckpt} is kept"
        return "no checkpoint had been written yet"

    # ------------------------------------------------------------------ outputs
    def replace_on_first_checkpoint(self, tensorboard: str | os.PathLike | None = None) -> None:
        """Leave the earlier run's files untouched until this run's first checkpoint (see the class);
        ``tensorboard``: this run's log folder, whose earlier event files go with them (else the
        earlier run's hyper-parameters, at step 0, would show beside the new run's points)."""
        self._held = {}
        self._earlier_log = Path(tensorboard) if tensorboard else None

    def _write(self, what: str, write) -> None:
        if self._held is None:
            write()
        else:
            self._held[what] = write  # the latest of each kind is written with the first checkpoint

    def write_record(self, record: dict) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in record["curve"]:
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVE_FIELDS})

        text = json_bytes(record)  # now: a held record must not take points added since, which its CSV lacks

        def write():
            atomic_write(self.record, text)
            atomic_write(self.csv, buf.getvalue().encode())
        self._write("record", write)

    def write_embedding(self, per_epoch: list[np.ndarray]) -> None:
        """E after each epoch so far, stacked: shape (epochs, n, n), raw values (softmax = soft targets)."""
        buf = io.BytesIO()
        np.save(buf, np.stack(per_epoch).astype(np.float32))
        self._write("embedding", lambda: atomic_write(self.emb, buf.getvalue()))

    def write_plot(self, record: dict) -> None:
        plot_curve(record, self.png)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict, epoch_end: bool = True) -> bool:
        """Keep the previous checkpoint as .prev, then move the new one in place; whether it was written.

        A run that replaces another (see the class) replaces the earlier run's files at its first
        end-of-epoch checkpoint: once the new checkpoint is on disk (a full disk fails here, and the
        earlier run stays as it was), the earlier record, curve, plot, E, previous checkpoint and
        TensorBoard event files go, the new checkpoint takes the old one's place, then the held
        record and E are written (and, by the caller, the held log). (Killed in between, the folder
        holds a checkpoint and no record: --resume continues it.) A stop inside that first epoch
        writes nothing: the earlier run stays as it was.
        """
        import torch

        if self._held is not None and not epoch_end:
            return False
        buf = io.BytesIO()
        torch.save(state, buf)
        if self._held is None:
            atomic_write(self.ckpt, buf.getvalue(), keep_previous=self.prev_ckpt)
            return True
        def drop_earlier_run() -> None:
            logs = self._earlier_log.glob(TENSORBOARD_EVENTS) if self._earlier_log is not None else ()
            for old in (self.record, self.csv, self.png, self.emb, self.prev_ckpt, *logs):
                old.unlink(missing_ok=True)
        atomic_write(self.ckpt, buf.getvalue(), before_replace=drop_earlier_run)
        held, self._held = self._held, None
        for write in held.values():
            write()
        return True

    def load_checkpoint(self, which: str = "last") -> dict:
        path = self.prev_ckpt if which == "previous" else self.ckpt
        if not path.exists():
            hint = "" if which == "previous" else " (start it without --resume)"
            raise UserError(f"no checkpoint {path} to resume from{hint}")
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or "model" not in state:
                raise ValueError("not a labelemb checkpoint")
        except Exception as e:
            offer = ("; resume from the one before it with --resume previous"
                     if which == "last" and self.prev_ckpt.exists() else "")
            raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}){offer}") from None
        return state


def _flock_exclusive(fd: int, tries: int = 20) -> None:
    """An exclusive flock, or BlockingIOError when it is held. Tried a few times over about 0.1 s: a
    :meth:`RunFiles.holder` probe (another sweep looking) holds a shared lock for an instant, which
    must not read as a run being trained."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.005)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def check_writable_folder(folder: str | os.PathLike, what: str, flag: str) -> None:
    """UserError unless ``folder`` (or, where it does not exist yet, the folder that would hold it) can
    be written and its disk has room. Creates nothing."""
    d = Path(folder).absolute()
    while not d.exists():
        d = d.parent
    problem = None
    if not d.is_dir():
        problem = f"{d} is a file, not a folder"
    elif not os.access(d, os.W_OK | os.X_OK):
        problem = f"{d} is not writable"
    elif shutil.disk_usage(d).free < 64 * 2**20:
        problem = f"the disk holding {d} is full (less than 64 MiB free)"
    if problem:
        raise UserError(f"cannot write {what} to {folder}: {problem}; choose another folder with {flag}") from None


def plot_curve(record: dict, path: Path) -> None:
    """Test error (%) against epoch for one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    from . import modes

    mode = modes.MODES.get(record["mode"])
    color = mode.color if mode else "tab:gray"
    ax.plot([r["epoch"] for r in curve], [r["test_error_pct"] for r in curve], color=color,
            label=f"{record['mode']} #{record['num']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"{record['task']} on {record['dataset']}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())

