"""Command line shared by the four entry scripts: flags, validation, runs, resume.

Each entry script is a :class:`Recipe` (SPEC §2's defaults) and a call to :func:`main`.
Errors the user can fix print one line and exit with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict, dataclass

import torch

from .data import default_data_dir, load_dataset
from .errors import UserError
from .results import RunFiles, RunLocked
from .distributed import Dist, from_env, setup, teardown
from .train import MODES, Interrupted, RunFailed, StopFlag, load_init_emb, run

# Config keys a checkpoint must share with the command that resumes it.
RECIPE_KEYS = ("task", "arch", "dataset", "mode", "tau", "alpha", "beta", "lr", "lr_decay_every",
               "lr_decay", "epochs", "batch_size", "test_batch_size", "evals_per_epoch", "drop_last",
               "val_size", "seed", "dry_run", "reported", "amp",
               "emb_dim", "init_emb", "freeze_emb", "smoothing", "resize")
# Keys added after checkpoints were first written: the value an older checkpoint implies.
ADDED_KEY_DEFAULTS = {"emb_dim": 0, "init_emb": None, "freeze_emb": False, "smoothing": None, "resize": False}
DEFAULT_SMOOTHING = 0.1


@dataclass(frozen=True)
class Recipe:
    """One task's defaults, as the authors' code ran it (SPEC §2)."""

    task: str
    arch: str
    datasets: tuple[str, ...]  # the first is the default
    results_dir: str
    epochs: int
    batch_size: int
    test_batch_size: int
    lr: float = 1e-3
    lr_decay_every: int = 0  # epochs between decays; 0 = constant learning rate
    lr_decay: float = 1.0
    evals_per_epoch: int = 1
    drop_last: bool = False
    val_size: int = 0  # first training images held out for validation
    reported: str = "final"  # "final" test error, or test error at the "best_val" point


class _Unset(float):
    """A flag's default value, told apart from the same value given on the command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(recipe: Recipe) -> argparse.ArgumentParser:
    p = _Parser(prog=f"{recipe.task}.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                description=f"Train {recipe.arch} on {recipe.datasets[0]} with or without LabelEmb "
                            f"(Sun et al. 2017); defaults are the paper's recipe.")
    a = p.add_argument
    a("--mode", choices=MODES, default="emb", help="baseline: cross-entropy only; emb: LabelEmb; "
      "ls: label smoothing (--smoothing); ols: online label smoothing (Zhang et al. 2021)")
    a("--dataset", choices=recipe.datasets, default=recipe.datasets[0],
      help="dataset" + ("; imagefolder: your own images, --data DIR holding train/<class>/ and test/<class>/"
                        if "imagefolder" in recipe.datasets else ""))
    a("--data", default=None, help="dataset folder (default: ./data; for fashion-mnist the Debian "
                                   "package's folder when installed)")
    if "imagefolder" in recipe.datasets:
        a("--resize", action="store_true", help="--dataset imagefolder: scale every image to 32x32 when "
                                                "decoding (aspect ratio not kept); otherwise they must be 32x32")
    a("--lr", type=float, default=recipe.lr, help="Adam learning rate")
    a("--tau", type=float, default=2.0, help="temperature of head 2's soft targets for E")
    a("--alpha", type=float, default=0.9, help="margin of the L_re term")
    a("--beta", type=float, default=0.5, help="weight of the hard-label term on head 1")
    a("--epochs", type=int, default=recipe.epochs, help="training epochs")
    a("--batch-size", type=int, default=recipe.batch_size, help="training batch size")
    a("--val-size", type=int, default=recipe.val_size, help="first training images held out for validation"
      if recipe.val_size else argparse.SUPPRESS)
    a("--num", type=int, default=0, help="run index, part of the output file names")
    a("--runs", type=int, default=None, help="train runs --num .. --num+RUNS-1 one after another, "
                                             "skipping runs already complete (default: just --num)")
    a("--seed", type=int, default=None, help="random seed (default: the run index --num)")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda if available")
    a("--results-dir", default=recipe.results_dir, help="folder for records, curves, checkpoints")
    a("--resume", nargs="?", const="last", choices=("last", "previous"), default=None,
      help="continue the run --num from its last checkpoint ('previous': the one before it)")
    a("--overwrite", action="store_true", help="retrain a run whose record is already complete")
    a("--dry-run", action="store_true", help="a few steps of one epoch, for smoke tests")
    a("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    g = p.add_argument_group("opt-in speed (off by default: the defaults are the paper's fp32 recipe)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the forward pass (loss in fp32)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format for conv nets")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    a("--per-rank-batch", action="store_true",
      help="under torchrun, --batch-size is per process (global batch = it x processes); "
           "by default it is the global batch, split across processes")
    b = p.add_argument_group("beyond the paper (opt-in; the defaults are the paper's recipe)")
    b.add_argument("--emb-dim", type=int, default=0, metavar="H",
                   help="--mode emb: compressed label embedding E[y] = relu(Linear(H -> n)(Embedding(n, H)[y])), "
                        "memory O(n*H) for many classes; 0 = the paper's full n x n matrix")
    b.add_argument("--init-emb", default=None, metavar="PATH",
                   help="--mode emb: start E from this .npy (an n x n matrix, or the <stem>_emb.npy of an earlier "
                        "emb run, whose last epoch is taken); None = the identity")
    b.add_argument("--freeze-emb", action="store_true",
                   help="--mode emb: keep E fixed; the loss is beta*CE(y, o1) + (1-beta)*CE(softmax(E[y]), o1), "
                        "head 2 unused")
    b.add_argument("--smoothing", type=float, default=_Unset(DEFAULT_SMOOTHING), metavar="EPS",
                   help="--mode ls: label-smoothing epsilon, in [0, 1)")
    return p


def validate(args: argparse.Namespace) -> None:
    checks = [
        (args.tau > 0, f"--tau must be > 0, got {args.tau}; the paper uses 2"),
        (0 < args.alpha <= 1, f"--alpha must be in (0, 1], got {args.alpha}; the paper uses 0.9"),
        (0 <= args.beta <= 1, f"--beta must be in [0, 1], got {args.beta}; the paper uses 0.5"),
        (args.lr > 0, f"--lr must be > 0, got {args.lr}; the paper uses 1e-3"),
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (args.batch_size >= 1, f"--batch-size must be >= 1, got {args.batch_size}"),
        (args.runs is None or args.runs >= 1, f"--runs must be >= 1, got {args.runs}"),
        (args.num >= 0, f"--num must be >= 0, got {args.num}"),
        (getattr(args, "val_size", 0) >= 0, f"--val-size must be >= 0, got {getattr(args, 'val_size', 0)}"),
        (args.emb_dim >= 0, f"--emb-dim must be >= 1 (or 0 for the full n x n matrix), got {args.emb_dim}"),
        (0 <= args.smoothing < 1, f"--smoothing must be in [0, 1), got {args.smoothing}; 0.1 is usual"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)
    for flag, given in (("--emb-dim", args.emb_dim > 0), ("--init-emb", args.init_emb is not None),
                        ("--freeze-emb", args.freeze_emb)):
        if given and args.mode != "emb":
            raise UserError(f"{flag} applies to --mode emb only (got --mode {args.mode})")
    if args.emb_dim > 0 and (args.init_emb is not None or args.freeze_emb):
        raise UserError(f"{'--init-emb' if args.init_emb is not None else '--freeze-emb'} works on the full "
                        "n x n matrix; it cannot be combined with --emb-dim")
    if args.init_emb is not None and not os.path.isfile(args.init_emb):
        raise UserError(f"--init-emb {args.init_emb}: no such file; pass the _emb.npy of an earlier emb run")
    if not isinstance(args.smoothing, _Unset) and args.mode != "ls":
        raise UserError(f"--smoothing applies to --mode ls only (got --mode {args.mode})")
    if getattr(args, "resize", False) and args.dataset != "imagefolder":
        raise UserError(f"--resize applies to --dataset imagefolder only (got --dataset {args.dataset})")
    if args.dataset == "imagefolder" and args.data is None:
        raise UserError("--dataset imagefolder needs --data DIR holding train/ and test/, each with one "
                        "sub-folder of images per class")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu or auto")
    if args.resume and args.runs is not None:
        raise UserError("--resume continues one run; a --runs sweep resumes its unfinished runs by itself")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_config(recipe: Recipe, args: argparse.Namespace, num: int, world: int = 1) -> dict:
    """The resolved configuration of run ``num``: saved in its record and checkpoint."""
    cfg = {k: v for k, v in asdict(recipe).items() if k not in ("datasets", "results_dir")}
    batch = args.batch_size * world if args.per_rank_batch else args.batch_size  # the global batch
    cfg.update(dataset=args.dataset, mode=args.mode, lr=args.lr, tau=args.tau, alpha=args.alpha,
               beta=args.beta, epochs=1 if args.dry_run else args.epochs, batch_size=batch, world_size=world,
               val_size=getattr(args, "val_size", recipe.val_size), num=num,
               seed=(num if args.seed is None else args.seed + num - args.num),
               dry_run=args.dry_run, quiet=args.quiet, data=args.data, results_dir=args.results_dir,
               device=args.device, amp=args.amp, channels_last=args.channels_last, compile=args.compile,
               emb_dim=args.emb_dim, init_emb=os.path.abspath(args.init_emb) if args.init_emb else None,
               freeze_emb=args.freeze_emb, smoothing=float(args.smoothing) if args.mode == "ls" else None,
               resize=getattr(args, "resize", False))
    return cfg


def check_resumable(cfg: dict, state: dict, path) -> None:
    old = state.get("config", {})
    old = {k: old.get(k, ADDED_KEY_DEFAULTS.get(k)) for k in RECIPE_KEYS}
    diff = [k for k in RECIPE_KEYS if old[k] != cfg.get(k)]
    if diff:
        shown = ", ".join(f"{k} (checkpoint {old[k]!r}, now {cfg.get(k)!r})" for k in diff)
        raise UserError(f"checkpoint {path} is of a different recipe: {shown}; "
                        "rerun with the checkpoint's settings, or without --resume to start anew")


def plan(cfg: dict, files: RunFiles, args: argparse.Namespace, sweep: bool) -> str:
    """'skip', 'resume' or 'fresh' for this run; refuses what would lose finished or unfinished work."""
    status = files.status()
    if status in ("complete", "failed") and not args.overwrite and sweep:
        return "skip"
    if status == "complete" and not args.overwrite:
        raise UserError(f"{files.record} already holds the finished run {cfg['num']}; use another --num, "
                        "or --overwrite to train it again")
    if args.resume:
        if not (files.prev_ckpt if args.resume == "previous" else files.ckpt).exists():
            raise UserError(f"no checkpoint {files.ckpt} to resume from; start the run without --resume")
        return "resume"
    if files.ckpt.exists() and not args.overwrite:
        if sweep:
            return "resume"
        raise UserError(f"{files.ckpt} holds an unfinished run {cfg['num']}; continue it with --resume, "
                        "or start it anew with --overwrite")
    return "fresh"


def train_one(cfg: dict, data, device, files: RunFiles, args, sweep: bool, stop: StopFlag,
              dist: Dist = Dist()) -> dict | None:
    """One run under its lock: skipped, resumed from its checkpoint, or trained from scratch.

    Under torchrun every rank calls this and takes the same branch; the main rank holds the lock.
    """
    locked = None
    if dist.main:
        try:
            files.acquire_lock()
        except RunLocked as e:
            locked = e
    if dist.any(locked is not None):
        raise locked or RunLocked(f"run {files.stem} is locked by another process")
    try:
        what = plan(cfg, files, args, sweep)  # again, now that the lock is held
        if what == "skip":
            if dist.main:
                print(f"{files.stem}: already {files.status()}, skipped")
            return None
        state = None
        if what == "resume":
            state = files.load_checkpoint(args.resume or "last")
            check_resumable(cfg, state, files.ckpt)
            if not args.quiet and dist.main:
                print(f"{files.stem}: resuming at epoch {state['epoch'] + 1}, step {state['step']}")
        elif dist.main:
            files.remove_checkpoints()
        return run(cfg, data, device, files, resume=state, stop=stop, dist=dist)
    finally:
        if dist.main:
            files.release_lock()


def main(recipe: Recipe, argv: list[str] | None = None) -> int:
    args = build_parser(recipe).parse_args(argv)
    prog = f"{recipe.task}.py"
    d = from_env()
    say = print if d.main else (lambda *a, **k: None)  # under torchrun only rank 0 speaks
    try:
        validate(args)
        d, device = setup(d, resolve_device(args.device))
        if args.data is None:
            args.data = default_data_dir(args.dataset)
        sweep = args.runs is not None
        nums = range(args.num, args.num + (args.runs or 1))
        runs = [(make_config(recipe, args, n, d.world),
                 RunFiles(args.results_dir, f"{args.dataset}_{recipe.arch}_{args.mode}_{n}")) for n in nums]
        runs[0][1].check_writable()
        if not sweep:
            plan(*runs[0], args, sweep)  # refuse before loading any data
        data = load_dataset(args.dataset, args.data, val_size=getattr(args, "val_size", 0),
                            resize=getattr(args, "resize", False)).to(device)
        if args.init_emb is not None:
            load_init_emb(args.init_emb, data.num_classes)  # its shape is checked before any training
        with StopFlag() as stop:
            for cfg, files in runs:
                try:
                    record = train_one(cfg, data, device, files, args, sweep, stop, d)
                except RunLocked as e:
                    if not sweep:
                        raise
                    say(f"{files.stem}: {e}; skipped")  # another process of the sweep has it
                    continue
                if record is not None:
                    rep = record["reported"]
                    say(f"{files.stem}: {rep['description']} {rep['test_error_pct']:.2f}% -> {files.record}")
        d.barrier()
    except UserError as e:
        say(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        say(f"{prog}: interrupted by {e}; checkpoint written. Continue with the same command and --resume"
            + (" (a --runs sweep resumes by itself)" if args.runs else ""), file=sys.stderr)
        return 130
    except RunFailed as e:
        say(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk or a folder that went away during the run
        where = f" ({e.filename})" if e.filename else ""
        say(f"{prog}: error: cannot write{where}: {e.strerror or e}; free space or choose another "
            "--results-dir, then continue with --resume", file=sys.stderr)
        return 2
    finally:
        teardown(d)
    return 0
