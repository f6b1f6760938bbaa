"""Everything a run writes: the JSON record, the CSV curve, the PNG, E per epoch, checkpoints.

Every write is atomic (temporary file in the same folder, fsync, rename), so a crash or a
second Ctrl-C leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

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


def atomic_write(path: Path, data: bytes, keep_previous: Path | None = None) -> None:
    """Write via a temporary file, fsync, rename; the old file becomes ``keep_previous`` if given."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_safe(obj):
    """NaN/inf (a diverged run's test loss) become null: strict JSON that every reader accepts."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(_json_safe(obj), indent=1, allow_nan=False) + "\n").encode())


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
    import torchvision

    from .device import tf32_state

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torchvision": torchvision.__version__, "numpy": np.__version__,
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
    """The files of one run: ``<dir>/<stem>.{json,csv,png,ckpt,lock}`` and ``<stem>_emb.npy``."""

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

    def check_writable(self) -> None:
        """Fail before training, not after hours of it, when results cannot be written.

        Creates nothing: the folder itself is made when the run takes its lock.
        """
        d = self.dir.absolute()
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
            raise UserError(f"cannot write results to {self.dir}: {problem}; choose another folder with "
                            "--results-dir") from None

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
        """One process per run: O_EXCL lock file holding our pid; a dead owner's lock is cleared."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = _lock_owner(self.lock)
                if pid is not None and _alive(pid):
                    raise RunLocked(f"run {self.stem} in {self.dir} is already being trained by process {pid}; "
                                    "wait for it, or use another --num") from None
                self.lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            return
        raise UserError(f"could not take the lock {self.lock}; remove it if no run is using it")

    def release_lock(self) -> None:
        if _lock_owner(self.lock) == os.getpid():
            self.lock.unlink(missing_ok=True)

    # ------------------------------------------------------------------ outputs
    def write_record(self, record: dict) -> None:
        write_json(self.record, record)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in record["curve"]:
            w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVE_FIELDS})
        atomic_write(self.csv, buf.getvalue().encode())

    def write_embedding(self, per_epoch: list[np.ndarray]) -> None:
        """E after each epoch so far, stacked: shape (epochs, n, n), raw values (softmax = soft targets)."""
        buf = io.BytesIO()
        np.save(buf, np.stack(per_epoch).astype(np.float32))
        atomic_write(self.emb, buf.getvalue())

    def write_plot(self, record: dict) -> None:
        plot_curve(record, self.png)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, state: dict) -> None:
        """Keep the previous checkpoint as .prev, then move the new one in place."""
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.ckpt, buf.getvalue(), keep_previous=self.prev_ckpt)

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

    def remove_checkpoints(self) -> None:
        self.ckpt.unlink(missing_ok=True)
        self.prev_ckpt.unlink(missing_ok=True)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plot_curve(record: dict, path: Path) -> None:
    """Test error (%) against epoch for one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    color = "tab:red" if record["mode"] == "emb" else "tab:blue"
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

