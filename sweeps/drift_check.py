"""Defaults do not drift: save the numbers of a fixed set of short runs, change the code, compare.

    python3 sweeps/drift_check.py save    /tmp/drift_before   # before the change
    python3 sweeps/drift_check.py compare /tmp/drift_before   # after it: exit 1 on any difference

The runs: ``mlp.py --dataset fashion-mnist --epochs 1 --seed 3`` in the reference mode and the paper's, and a
``--dry-run`` of each of the four scripts (MNIST scripts on Fashion-MNIST, the CIFAR scripts on
tiny files in the real pickle format, written by the tests' ``make_cifar``). Compared bitwise:
every curve value except ``train_seconds`` (a clock), the reported error, E per epoch
(``_emb.npy``) and the trained weights in the checkpoint. Same machine, same thread count
(``OMP_NUM_THREADS=1`` is set for every run).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from labelemb import modes  # noqa: E402  (the modes by their roles: no mode is named outside the package)

BASE, METHOD = modes.with_role("reference").name, modes.with_role("method").name
FASHION = ["--dataset", "fashion-mnist"]
RUNS = {  # name -> (script, flags)
    "mlp_baseline": ("mlp.py", FASHION + ["--epochs", "1", "--seed", "3", "--mode", BASE]),
    "mlp_emb": ("mlp.py", FASHION + ["--epochs", "1", "--seed", "3", "--mode", METHOD]),
    "dry_mlp": ("mlp.py", FASHION + ["--dry-run"]),
    "dry_cnn": ("cnn.py", FASHION + ["--dry-run"]),
    "dry_cifar10": ("cifar10.py", ["--dry-run"]),
    "dry_cifar100": ("cifar100.py", ["--dry-run"]),
}


def _cifar(folder: Path, name: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_cifar  # the tests' writer of the real CIFAR format

    return make_cifar(folder / name, name)


def run_all(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for name, (script, flags) in RUNS.items():
        extra = []
        if script.startswith("cifar"):
            extra = ["--data", str(_cifar(out / "data", script[:-3]))]
        cmd = [sys.executable, str(ROOT / script), *flags, *extra, "--quiet", "--results-dir", str(out / name)]
        subprocess.run(cmd, check=True, env=env, cwd=out)
        print(f"{name}: done")


def numbers(folder: Path) -> dict:
    """What must not drift, per run folder: curve (no clock), reported error, E, weights."""
    import numpy as np
    import torch

    out = {}
    for rec_path in sorted(folder.glob("*/*.json")):
        rec = json.loads(rec_path.read_text())
        if rec.get("format") != "labelemb-run/1":
            continue
        key = f"{rec_path.parent.name}/{rec_path.stem}"
        curve = [{k: v for k, v in row.items() if k != "train_seconds"} for row in rec["curve"]]
        emb = rec_path.with_name(rec_path.stem + "_emb.npy")
        ckpt = torch.load(rec_path.with_suffix(".ckpt"), map_location="cpu", weights_only=False)
        out[key] = {"curve": curve, "reported": rec["reported"]["test_error_pct"],
                    "embedding": np.load(emb).tobytes().hex() if emb.exists() else None,
                    "weights": {k: v.numpy().tobytes().hex() for k, v in ckpt["model"].items()}}
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("save", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    what, folder = argv[0], Path(argv[1]).absolute()
    if what == "save":
        run_all(folder)
        print(f"saved {len(numbers(folder))} runs in {folder}")
        return 0
    after = folder.with_name(folder.name + "_after")
    if after.exists():
        import shutil

        shutil.rmtree(after)
    run_all(after)
    a, b = numbers(folder), numbers(after)
    bad = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    for k in bad:
        parts = [p for p in ("curve", "reported", "embedding", "weights") if (a.get(k) or {}).get(p) != (b.get(k) or {}).get(p)]
        print(f"DIFFERS: {k}: {', '.join(parts) or 'missing on one side'}")
    print(f"{len(a)} runs compared: {'bitwise identical' if not bad else f'{len(bad)} differ'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
