"""Command line shared by the four entry scripts: flags -> Config -> runs, resume.

Each entry script is a :class:`~labelemb.config.Recipe` (SPEC §2's defaults) and a call to
:func:`main`. Errors the user can fix print one line and exit with code 2, before anything is
written.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from . import modes
from .config import BN_INITS, DEFAULT_MODE, DEVICES, RECIPES, Config, ConfigError, Recipe, check
from .data import PROJECT_MNIST, SYSTEM_FASHION_MNIST, default_data_dir, has_idx_files, load_dataset
from .device import resolve_device
from .distributed import Dist, from_env, setup, teardown
from .errors import DatasetMissing, UserError
from .interrupt import Interrupted, RunFailed, StopFlag
from .parsing import Parser, parser
from .results import FINISHED, RunFiles, RunLocked, check_writable_folder, read_record
from .tblog import INSTALL_HINT, available, claim as claim_log
from .train import Schedule, missing_parts, run


def build_parser(recipe: Recipe) -> Parser:
    p = parser(f"{recipe.task}.py", f"Train {recipe.arch} on {recipe.datasets[0]} with or without LabelEmb "
                                    "(Sun et al. 2017); defaults are the paper's recipe.")
    own_images = "imagefolder" in recipe.datasets
    a = p.add_argument
    a("--mode", choices=list(modes.MODES), default=DEFAULT_MODE,
      help="; ".join(f"{m.name}: {m.help}" for m in modes.MODES.values()))
    a("--dataset", choices=recipe.datasets, default=recipe.datasets[0],
      help="dataset" + ("; imagefolder: your own images, --data DIR holding train/<class>/ and test/<class>/"
                        if own_images else ""))
    a("--data", default=None, help="dataset folder (default: ./data; for fashion-mnist the Debian "
                                   "package's folder when installed)")
    a("--resize", action="store_true", help="--dataset imagefolder: scale every image to 32x32 when decoding "
      "(aspect ratio not kept); otherwise they must be 32x32" if own_images else argparse.SUPPRESS)
    a("--lr", type=float, default=recipe.lr, help="Adam learning rate")
    a("--epochs", type=int, default=recipe.epochs, help="training epochs")
    a("--batch-size", type=int, default=recipe.batch_size, help="training batch size")
    a("--val-size", type=int, default=recipe.val_size, help="first training images held out for validation"
      if recipe.val_size else argparse.SUPPRESS)
    a("--num", type=int, default=0, help="run index, part of the output file names")
    a("--runs", type=int, default=None, help="train runs --num .. --num+RUNS-1 one after another, skipping "
                                             "runs already complete with these settings and data (a finished run "
                                             "of others is an error) and resuming unfinished ones (default: just --num)")
    a("--seed", type=int, default=None, help="random seed (default: the run index --num)")
    a("--device", choices=DEVICES, default="auto", help="auto = cuda if available")
    a("--results-dir", default=recipe.results_dir, help="folder for records, curves, checkpoints")
    a("--resume", nargs="?", const="last", choices=("last", "previous"), default=None,
      help="continue the run --num from its last checkpoint ('previous': the one before it)")
    a("--overwrite", action="store_true", help="retrain a run whose record is already complete")
    a("--dry-run", action="store_true", help="a few steps of one epoch, for smoke tests")
    a("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    a("--tensorboard", nargs="?", const="", default=None, metavar="DIR",
      help="log to TensorBoard: scalars at every evaluation point, the soft targets once per epoch, the settings "
           "at the end; in DIR/<run> (default: <results-dir>/<run>_tensorboard); needs the tensorboard package")
    a("--bn-init", choices=BN_INITS, default=recipe.bn_init,
      help="BatchNorm scales at the start: uniform in [0, 1) as in PyTorch 0.2, which the authors ran (SPEC); "
           "ones as in today's PyTorch" if recipe.bn_init else argparse.SUPPRESS)
    g = p.add_argument_group("opt-in speed (off by default: the defaults are the paper's recipe in strict fp32, "
                             "TF32 off on CUDA)")
    g.add_argument("--tf32", action="store_true", help="TF32 for CUDA matmuls and convolutions (no effect on a CPU)")
    g.add_argument("--amp", action="store_true", help="bf16 autocast for the forward pass (loss in fp32)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format for conv nets")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (slow first steps)")
    a("--per-rank-batch", action="store_true",
      help="under torchrun, --batch-size is per process (global batch = it x processes); "
           "by default it is the global batch, split across processes")
    for mode in modes.MODES.values():
        add_settings(p, mode)
    return p


_TYPES = {"number": float, "integer": int, "path": str}


def add_settings(p: Parser, mode) -> None:
    """The flags of ``mode``'s own settings, in a group of their own; each defaults to None (not given)."""
    if not mode.settings:
        return
    g = p.add_argument_group(f"--mode {mode.name} ({mode.label}): its settings")
    for s in mode.settings:
        shown = "" if s.default is None else f" (default: {s.default:g})" if s.kind in ("number", "integer") else \
            f" (default: {s.default!r})"
        try:
            if s.kind == "flag":
                g.add_argument(s.flag, action="store_true", default=None, help=s.help)
            else:
                g.add_argument(s.flag, type=_TYPES[s.kind], default=None, metavar=s.metavar, help=s.help + shown)
        except argparse.ArgumentError:
            raise ValueError(f"mode {mode.name}: the flag {s.flag} of its setting {s.name!r} is a flag of the scripts "
                             "already; rename the setting") from None


def given_settings(args: argparse.Namespace) -> dict:
    """The mode settings given on the command line (Config says which belong to another mode)."""
    return {s.name: getattr(args, s.name) for m in modes.MODES.values() for s in m.settings
            if getattr(args, s.name, None) is not None}


def check_flags(args: argparse.Namespace) -> None:
    """What a Config cannot check: flags that are not settings of a run, and this machine."""
    check("epochs", args.epochs, flag=True)  # --dry-run trains 1 epoch whatever it says
    if args.runs is not None:
        check("runs", args.runs, flag=True)
    if args.resume and args.runs is not None:
        raise UserError("--resume continues one run; a --runs sweep resumes its unfinished runs by itself")
    if args.resume and args.overwrite:
        raise UserError("--resume continues a run and --overwrite starts it anew; give one of them")
    if args.seed is None:  # the run index is then the seed: the same range
        for n in (args.num, args.num + (args.runs or 1) - 1):
            try:
                check("seed", n)
            except ConfigError as e:
                raise UserError(f"--num {n} is also the run's seed (no --seed given): {str(e).removeprefix('seed ')}"
                                ) from None
    for key, value in given_settings(args).items():
        s = modes.owner(key).setting(key)
        if s.kind == "path" and not os.path.isfile(value):
            raise UserError(f"{s.flag} {value}: no such file" + (f"; {s.hint}" if s.hint else ""))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is available; use --device cpu or auto")
    if args.tensorboard is not None and not available():
        raise UserError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}")
    if args.tensorboard:
        check_writable_folder(args.tensorboard, "the TensorBoard log", "--tensorboard DIR")


def make_config(recipe: Recipe, args: argparse.Namespace, num: int, world: int = 1) -> Config:
    """The resolved configuration of run ``num`` (ConfigError for values out of range)."""
    settings = {k: os.path.abspath(v) if modes.owner(k).setting(k).kind == "path" else v
                for k, v in given_settings(args).items()}
    cfg = recipe.config(
        dataset=args.dataset, mode=args.mode, lr=args.lr, settings=settings,
        epochs=1 if args.dry_run else args.epochs, val_size=args.val_size,
        batch_size=args.batch_size * world if args.per_rank_batch else args.batch_size,  # the global batch
        num=num, seed=num if args.seed is None else args.seed + num - args.num, world_size=world,
        dry_run=args.dry_run, quiet=args.quiet, device=args.device, results_dir=args.results_dir,
        data=args.data if args.data is not None else default_data_dir(args.dataset),
        amp=args.amp, tf32=args.tf32, channels_last=args.channels_last, compile=args.compile,
        bn_init=args.bn_init, resize=args.resize)
    if cfg.reported == "best_val" and cfg.val_size == 0:  # else the last point, named the best one
        raise ConfigError("--val-size 0 leaves no validation set, and this script reports the test error at the "
                          "best validation accuracy (SPEC §2); hold some images out (the recipe: --val-size 5000)")
    if args.tensorboard is None:
        return cfg
    logs = os.path.join(args.tensorboard, cfg.stem) if args.tensorboard else \
        os.path.join(args.results_dir, f"{cfg.stem}_tensorboard")
    return cfg.replace(tensorboard=os.path.abspath(logs))


def check_resumable(cfg: Config, checkpoint: dict, path) -> None:
    """UserError listing the recipe settings where ``checkpoint`` differs from ``cfg``, naming only
    flags that this script (``cfg.task``) has."""
    try:
        saved = Config.from_record(checkpoint.get("config"))
    except (ConfigError, TypeError) as e:
        raise UserError(f"checkpoint {path} holds no usable config ({e}); start the run without --resume") from None
    if saved.task != cfg.task:
        raise UserError(f"checkpoint {path} is a run of {saved.task}.py ({saved.arch} on {saved.dataset}), not "
                        f"of {cfg.task}.py; resume it with python3 {saved.task}.py --resume")
    diff = cfg.resume_mismatch(saved)
    if diff:
        shown = ", ".join(f"{k} (checkpoint {old!r}, now {new!r})" for k, old, new in diff)
        own = {a.dest for a in build_parser(RECIPES[cfg.task])._actions}  # the settings this script has flags for
        flags = [k for k, _, _ in diff if k in own]
        fix = (f"rerun with the checkpoint's settings ({', '.join('--' + k.replace('_', '-') for k in flags)}), "
               if flags else "")
        if len(flags) < len(diff):  # a recipe default that no flag sets: the checkpoint is of other code
            fix += "resume it with the version of this suite that wrote it, "
        raise UserError(f"checkpoint {path} is of a different recipe: {shown}; {fix}or start anew without --resume")


def check_complete(checkpoint: dict, path) -> None:
    """UserError naming what ``checkpoint`` lacks of what a run needs to continue."""
    missing = missing_parts(checkpoint)
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}, so it cannot continue the run; resume "
                        "with --resume previous, or start the run anew with --overwrite")


def differing_files(saved: dict, data) -> list[str] | None:
    """The data files (by name) whose sha256 differs between the ``data`` a checkpoint or record
    saved and ``data`` now; None where either does not record them (written before fingerprints)."""
    saved = saved.get("data")
    if not isinstance(saved, dict) or not isinstance(saved.get("sha256"), dict) or data.source is None:
        return None
    old, new = saved["sha256"], data.source["sha256"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_same_data(checkpoint: dict, data, path) -> None:
    """UserError unless ``data`` is the data the checkpoint was trained on: the same files (sha256)
    and class names. Checkpoints written before they recorded it are accepted with a note."""
    differ = differing_files(checkpoint, data)
    if differ is None:
        print(f"note: checkpoint {path} does not record which data it was trained on; resuming on "
              f"{data.source['folder'] if data.source else 'the given data'} unchecked", file=sys.stderr)
        return
    saved = checkpoint["data"]
    if differ:
        raise UserError(f"checkpoint {path} was trained on other data: {', '.join(differ)} differ between "
                        f"{saved.get('folder')} (the checkpoint's) and {data.source['folder']} (now); resume with "
                        f"--data {saved.get('folder')}, or start anew with --overwrite")
    if checkpoint.get("classes") not in (None, data.classes):
        raise UserError(f"checkpoint {path} was trained with the classes {', '.join(map(str, checkpoint['classes']))}, "
                        f"the data now has {', '.join(data.classes)}; resume with the checkpoint's data")


def check_finished_is_this_run(cfg: Config, files: RunFiles, data=None, flags: str | None = None) -> None:
    """UserError if the finished run in ``files.record`` is not the run ``cfg`` describes: trained with
    other settings (a dry run, other epochs, ...) or, given ``data``, on other files. A sweep skips a
    finished run only when it is this run, so it never reports another run's error as this one's.
    ``flags``: the sweep's flags for every run, for the retrain command the message gives."""
    try:
        record = read_record(files.record)
        saved = Config.from_record(record.get("config"))
    except (UserError, TypeError):  # unreadable or without a usable config: nothing to compare
        return
    differ = [f"{k} {old!r} (now {new!r})" for k, old, new in cfg.resume_mismatch(saved)]
    if data is not None and differing_files(record, data):
        differ.append(f"the data of {record['data'].get('folder')} (now {data.source['folder']}, other files)")
    if differ:
        again = " ".join(x for x in (f"python3 {cfg.task}.py", flags or "", f"--mode {cfg.mode} --num {cfg.num} "
                                     f"--results-dir {files.dir} --overwrite") if x)
        raise UserError(f"{files.record} holds a finished run {cfg.num} with other settings: {', '.join(differ)}; "
                        f"use another --results-dir, or train that run again: {again}"
                        + ("" if flags is not None else " (with this sweep's other flags)"))


def plan(cfg: Config, files: RunFiles, args: argparse.Namespace, sweep: bool, data=None) -> str:
    """'skip', 'resume' or 'fresh' for this run; refuses what would lose finished or unfinished work."""
    status = files.status()
    if status in FINISHED and not args.overwrite and sweep:
        check_finished_is_this_run(cfg, files, data)
        return "skip"
    if status == "complete" and not args.overwrite:
        raise UserError(f"{files.record} already holds the finished run {cfg.num}; use another --num, "
                        "or --overwrite to train it again")
    if args.resume:
        wanted = files.prev_ckpt if args.resume == "previous" else files.ckpt
        if not wanted.exists():
            there = f" ({files.ckpt} is there: --resume without 'previous' takes it)" \
                if args.resume == "previous" and files.ckpt.exists() else ""
            raise UserError(f"no checkpoint {wanted} to resume from{there}; start the run without --resume")
        return "resume"
    if files.ckpt.exists() and not args.overwrite:
        if sweep:
            return "resume"
        raise UserError(f"{files.ckpt} holds an unfinished run {cfg.num}; continue it with --resume, "
                        "or start it anew with --overwrite")
    if files.prev_ckpt.exists() and not args.overwrite:  # the one before the last, and the last is missing
        raise UserError(f"{files.prev_ckpt} holds the previous checkpoint of the unfinished run {cfg.num} and there "
                        f"is no {files.ckpt.name}; continue it with python3 {cfg.task}.py --num {cfg.num} --resume "
                        "previous (and its flags), or start it anew with --overwrite")
    return "fresh"


def train_one(cfg: Config, data, device, files: RunFiles, args, stop: StopFlag, dist: Dist = Dist()) -> dict | None:
    """One run under its lock: skipped, resumed from its checkpoint, or trained from scratch.

    Under torchrun every rank calls this and takes the same branch; the main rank holds the lock.
    """
    sweep = args.runs is not None
    locked = None
    if dist.main:
        try:
            files.acquire_lock()
        except RunLocked as e:
            locked = e
    if dist.any(locked is not None):
        raise locked or RunLocked(f"run {files.stem} is locked by another process")
    try:
        what = plan(cfg, files, args, sweep, data)  # again, now that the lock is held
        if what == "skip":
            if dist.main:
                print(f"{files.stem}: already {files.status()}, skipped")
            return None
        checkpoint = None
        if what == "resume":
            path = files.prev_ckpt if args.resume == "previous" else files.ckpt
            checkpoint = files.load_checkpoint(args.resume or "last")
            check_resumable(cfg, checkpoint, path)
            check_complete(checkpoint, path)
            check_same_data(checkpoint, data, path)
        elif files.has_work():  # --overwrite: the earlier files stay until this run's first checkpoint
            files.replace_on_first_checkpoint(cfg.tensorboard)
        if cfg.tensorboard is not None:  # its own log folder, not another results folder's run of this name
            refused = None
            if dist.main:
                try:
                    claim_log(cfg.tensorboard, files.record)
                except UserError as e:
                    refused = e
            if dist.any(refused is not None):  # every rank takes the same branch
                raise refused or UserError(f"the main process refused the TensorBoard log folder {cfg.tensorboard}")
        if checkpoint is not None and not args.quiet and dist.main:
            print(f"{files.stem}: resuming at epoch {checkpoint['epoch'] + 1}, step {checkpoint['step']}")
        try:
            return run(cfg, data, device, files, resume=checkpoint, stop=stop, dist=dist)
        except OSError as e:  # a full disk: the record must not say "running" for ever
            if dist.main:
                files.mark_stopped(f"cannot write {e.filename or files.dir}: {e.strerror or e}")
            raise
    finally:
        if dist.main:
            files.release_lock()


def load_data(cfg: Config, download: bool = True):
    """The dataset of run ``cfg``, read as every run reads it (downloaded where absent, if asked)."""
    return load_dataset(cfg.dataset, cfg.data, val_size=cfg.val_size, download=download, resize=cfg.resize)


def read_data(cfg: Config, dist: Dist):
    """The runs' dataset. Under torchrun the first process of each machine reads it first (downloading
    it if need be) while the others wait, so that no two processes download into one folder at once;
    where it failed, every process stops with its error."""
    if not dist.active:
        return load_data(cfg)
    data, error = None, None
    if dist.local_rank == 0:
        try:
            data = load_data(cfg)
        except UserError as e:
            error = e
    if dist.any(error is not None):  # every process calls this: the first ones' outcome
        raise error or UserError(f"{cfg.data}: another machine of this torchrun job could not read the data there; "
                                 "pass a --data folder that every machine has")
    return data if data is not None else load_data(cfg, download=False)


def train_all(runs: list[tuple[Config, RunFiles]], args, device, dist: Dist, say) -> list[str]:
    """Load the data once, then train (or skip) each run in turn. A --runs sweep goes on past a run
    that fails; the failures are returned (a single run raises instead)."""
    cfg0, files0 = runs[0]
    sweep = args.runs is not None
    files0.check_writable()
    if not sweep:  # refuse before loading any data
        holder = files0.holder() if dist.main else None  # (under torchrun the main rank holds the lock)
        if dist.any(holder is not None):  # every rank takes the same branch
            raise RunLocked(files0.locked_message(holder))
        plan(cfg0, files0, args, sweep)
    data = read_data(cfg0, dist).to(device)
    Schedule.of(cfg0, len(data.train_y))  # the batch fits the data: checked before any file is touched
    mode = modes.get(cfg0.mode)
    if mode.check_data is not None:  # e.g. emb: the shape of --init-emb
        mode.check_data(cfg0, data)
    failed = []
    with StopFlag() as stop:
        for i, (cfg, files) in enumerate(runs):
            if i and dist.any(stop.requested is not None):  # came as the run before ended: start no other
                if failed:
                    say(f"{len(failed)} run(s) did not complete: " + "; ".join(failed), file=sys.stderr)
                raise Interrupted(stop.requested or "a signal to another process", between_runs=True)
            try:
                record = train_one(cfg, data, device, files, args, stop, dist)
            except RunLocked as e:
                if not sweep:
                    raise
                say(f"{files.stem}: {e}; skipped")  # another process of the sweep has it
                continue
            except (RunFailed, UserError) as e:
                if not sweep:
                    raise
                failed.append(f"{files.stem}: {e}")
                say(f"{files.stem}: error: {e}; the sweep goes on", file=sys.stderr)
                continue
            if record is not None:
                rep = record["reported"]
                say(f"{files.stem}: {rep['description']} {rep['test_error_pct']:.2f}% -> {files.record}")
    return failed


def offline_alternative(recipe: Recipe, args: argparse.Namespace) -> tuple[str, list[str]] | None:
    """What runs offline on this machine instead, where there is one: (what is here, the flags that pick
    it). For MNIST, the same recipe on the real MNIST that this project's machines keep beside the
    checkout (SPEC §4); otherwise, for the MNIST scripts, Fashion-MNIST from the Debian package."""
    tried = os.path.abspath(args.data) if args.data is not None else None
    if args.dataset == "mnist" and has_idx_files(PROJECT_MNIST, "mnist") and tried != os.path.abspath(PROJECT_MNIST):
        return f"the real MNIST of this project's machines is in {PROJECT_MNIST}", ["--data", PROJECT_MNIST]
    if "fashion-mnist" in recipe.datasets and args.dataset != "fashion-mnist" and SYSTEM_FASHION_MNIST.is_dir():
        return "Fashion-MNIST is installed on this machine", ["--dataset", "fashion-mnist"]
    return None


def offline_hint(recipe: Recipe, args: argparse.Namespace) -> str:
    """The end of a missing dataset's error: the command that runs here instead, if any."""
    alt = offline_alternative(recipe, args)
    if alt is None:
        return ""
    what, flags = alt
    return (f"; offline, {what} and this runs now: python3 {recipe.task}.py --mode={args.mode} {' '.join(flags)} "
            "--results-dir my_results")


def main(recipe: Recipe, argv: list[str] | None = None) -> int:
    args = build_parser(recipe).parse_args(argv)
    prog = f"{recipe.task}.py"
    try:
        d = from_env()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    say = print if d.main else (lambda *a, **k: None)  # under torchrun only rank 0 speaks
    try:
        check_flags(args)
        nums = range(args.num, args.num + (args.runs or 1))
        configs = [make_config(recipe, args, n, d.world) for n in nums]
        runs = [(cfg, RunFiles(args.results_dir, cfg.stem)) for cfg in configs]
        d, device = setup(d, resolve_device(args.device))
        failed = train_all(runs, args, device, d, say)
        d.barrier()
        if failed:
            say(f"{prog}: {len(failed)} of {len(runs)} runs did not complete: " + "; ".join(failed), file=sys.stderr)
            return 1
    except UserError as e:
        hint = offline_hint(recipe, args) if isinstance(e, DatasetMissing) else ""
        say(f"{prog}: error: {e}{hint}", file=sys.stderr)
        return 2
    except Interrupted as e:
        if e.between_runs:
            say(f"{prog}: interrupted by {e.signal} between two runs; the same command continues with the next "
                "run", file=sys.stderr)
        elif e.kept:  # an --overwrite run stopped inside its first epoch
            say(f"{prog}: interrupted by {e.signal} before the new run's first checkpoint: {e.kept}; start it again "
                "with --overwrite", file=sys.stderr)
        else:
            say(f"{prog}: interrupted by {e.signal}; checkpoint written. Continue with the same command and --resume"
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


def run_task(argv: list[str] | None = None) -> int:
    """``python3 -m labelemb.cli TASK [flags]``: the entry script of TASK (what labelemb-sweep runs,
    from a checkout or an installed package alike)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in RECIPES:
        print(f"usage: python3 -m labelemb.cli {{{','.join(RECIPES)}}} [flags of that script]", file=sys.stderr)
        return 2
    return main(RECIPES[argv[0]], argv[1:])


if __name__ == "__main__":
    sys.exit(run_task())
