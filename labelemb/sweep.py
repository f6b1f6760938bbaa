"""``labelemb-sweep``: many runs of one task at once (modes x run indices), each in its own process.

    labelemb-sweep TASK --modes baseline,emb --runs 20 [--num 0] [--results-dir DIR] [--jobs J]
                   [--gpus 0,1,...] [--executor local|slurm] [slurm options] [-- flags for every run]

``local`` (the default) keeps up to J runs going on this machine: CPU threads are split between
them (``OMP_NUM_THREADS`` = cores / J unless you set it), and with GPUs each run gets one of them
(``CUDA_VISIBLE_DEVICES``), round robin. A run is the entry script's own command with ``--runs 1``
(``python3 -m labelemb.cli TASK ...``), so complete runs are skipped, interrupted ones resumed,
and a run another process trains (its lock) is skipped and reported. Each run's output goes to
``DIR/sweep_logs/<run>.log``; a failed run does not stop the others. Ctrl-C or SIGTERM stops
every run cleanly (each writes its checkpoint; a second Ctrl-C stops them at once) and the same
command continues the sweep. At the end a table of the runs; the exit code is 0 only when every
run is complete.

``slurm`` submits one job array through submitit (``pip install ".[slurm]"``), one task per run,
at most J at once. Slurm signals SIGUSR1 two minutes before a task's time limit (or on
preemption): the task stops its run, which writes a checkpoint (the training loop treats SIGUSR1
like SIGTERM), and submitit requeues the task, which resumes from that checkpoint.

Either way the runs' data is read here first, once (downloaded here if need be), before any run starts.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import modes
from .config import RECIPES
from .errors import DatasetMissing, UserError
from .parsing import Parser, parser
from .results import FINISHED, RunFiles, check_writable_folder

EXECUTORS = ("local", "slurm")
# flags the sweep sets for each run itself
MANAGED = ("--mode", "--num", "--runs", "--seed", "--results-dir", "--resume", "--overwrite", "--quiet")
SLURM_OPTIONS = {  # our flag -> submitit's SlurmExecutor parameter
    "partition": "partition", "time": "time", "gpus_per_task": "gpus_per_task", "cpus_per_task": "cpus_per_task",
    "mem": "mem", "account": "account", "qos": "qos", "constraint": "constraint"}
SIGNAL_DELAY_S = 120  # Slurm's SIGUSR1 this long before the time limit: time to write a checkpoint
MAX_REQUEUES = 1000  # time limits a task may reach (each one: checkpoint, requeue, resume)
INSTALL = 'pip install ".[slurm]" (or pip install submitit)'
PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])  # where `import labelemb` finds this checkout


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: its task, mode and index, where it writes, and the flags it shares."""

    task: str
    mode: str
    num: int
    results_dir: str
    flags: tuple[str, ...]
    stem: str
    # finished (complete or failed) when the sweep was planned, and checked to be this run then: skipped.
    # A record that appears later may be another process's run of other settings: the child decides.
    finished: bool = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "labelemb.cli", self.task, *self.flags, "--mode", self.mode, "--num",
                str(self.num), "--runs", "1", "--results-dir", self.results_dir, "--quiet"]

    def files(self) -> RunFiles:
        return RunFiles(self.results_dir, self.stem)

    def outcome(self) -> tuple[str, float | None]:
        """(status of its record, or 'not started'; its reported test error %, if complete)."""
        try:
            rec = json.loads(self.files().record.read_text())
        except (OSError, ValueError):
            return "not started", None
        if not isinstance(rec, dict):
            return "unreadable", None
        reported = rec.get("reported")
        err = reported.get("test_error_pct") if isinstance(reported, dict) and rec.get("status") == "complete" else None
        return str(rec.get("status")), err if isinstance(err, (int, float)) else None


def child_env(gpu: int | None, threads: int | None) -> dict:
    """The environment of one run: this checkout importable, its GPU, its share of the CPU threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    if gpu is not None:  # an index among the GPUs this process sees: through its own CUDA_VISIBLE_DEVICES, if set
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[gpu] if gpu < len(visible) else str(gpu)
    if threads is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# ----------------------------------------------------------------------------- the plan
def build_parser() -> Parser:
    p = parser("python3 -m labelemb.sweep", command="labelemb-sweep", description=(
        "Run many runs of one task at once: every mode of --modes for run indices --num .. --num+RUNS-1, on this "
        "machine (up to --jobs at a time, GPUs round robin) or as one Slurm job array (submitit). Complete runs are "
        "skipped and interrupted ones resumed, so the same command continues a sweep. Flags after -- go to every run."))
    p.add_argument("task", choices=list(RECIPES), help="the entry script's task (mlp.py, cnn.py, cifar10.py, cifar100.py)")
    p.add_argument("--modes", required=True, metavar="M1,M2", help=f"comma-separated modes of {', '.join(modes.MODES)}; "
                   "'all' for every mode, 'paper' for the reference and the paper's method")
    p.add_argument("--runs", type=int, required=True, help="run indices per mode (seeds: the indices)")
    p.add_argument("--num", type=int, default=0, help="the first run index")
    p.add_argument("--results-dir", default=None, help="where the runs write (default: the task's own folder)")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at once (default: the number of --gpus, else 1; slurm: array tasks at once)")
    p.add_argument("--gpus", default=None, metavar="0,1,...",
                   help="local: the GPUs to use, one run per GPU at a time (default: every visible GPU, if any)")
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="local processes, or a Slurm job array")
    s = p.add_argument_group("slurm (--executor slurm; needs submitit: " + INSTALL + ")")
    s.add_argument("--partition", default=None, help="the partition")
    s.add_argument("--time", type=int, default=None, metavar="MIN", help="time limit per task, in minutes "
                   "(a task that reaches it checkpoints and is requeued)")
    s.add_argument("--gpus-per-task", type=int, default=None, metavar="G", help="GPUs per task")
    s.add_argument("--cpus-per-task", type=int, default=None, metavar="C", help="CPUs per task")
    s.add_argument("--mem", default=None, help="memory per task, e.g. 16G")
    s.add_argument("--account", default=None, help="the account to charge")
    s.add_argument("--qos", default=None, help="quality of service")
    s.add_argument("--constraint", default=None, help="node features, e.g. a100")
    return p


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the sweep's own arguments, the flags after -- for every run)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_modes(text: str) -> list[str]:
    if text == "all":
        return list(modes.MODES)
    if text == "paper":
        return [modes.with_role("reference").name, modes.with_role("method").name]
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in modes.MODES]
    if unknown or not names:
        raise UserError(f"--modes: unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(modes.MODES)}, or 'all' or 'paper'")
    return list(dict.fromkeys(names))


def check_sweep_args(args: argparse.Namespace) -> None:
    """One line for each thing that cannot work, before anything is started."""
    for flag, v in (("--runs", args.runs), ("--jobs", args.jobs)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be >= 1, got {v}")
    if args.num < 0:
        raise UserError(f"--num must be >= 0, got {args.num}")
    given = [f"--{k.replace('_', '-')}" for k in SLURM_OPTIONS if getattr(args, k) is not None]
    if args.executor == "local" and given:
        raise UserError(f"{', '.join(given)} {'is a Slurm option' if len(given) == 1 else 'are Slurm options'}; "
                        "add --executor slurm, or leave them out")
    if args.executor == "slurm" and args.gpus is not None:
        raise UserError("--gpus picks this machine's GPUs; on Slurm ask for them with --gpus-per-task")
    if args.executor == "slurm" and args.time is None:
        raise UserError("--executor slurm needs --time MIN, the time limit of each task (submitit's default is 5 "
                        "minutes); a run longer than that checkpoints and is requeued each time it is reached")
    if args.time is not None and args.time <= SIGNAL_DELAY_S // 60:
        raise UserError(f"--time must be more than {SIGNAL_DELAY_S // 60} minutes (Slurm warns {SIGNAL_DELAY_S} s "
                        f"before the limit, for the checkpoint), got {args.time}")


def plan_runs(args: argparse.Namespace, flags: list[str]) -> list[SweepRun]:
    """The runs of the sweep, run index by run index (the modes of one index together: pairs complete
    early); the shared flags are checked by the task's own parser first, then the data is read once."""
    from .cli import build_parser as script_parser, check_finished_is_this_run, check_flags, load_data, \
        make_config, offline_alternative

    recipe = RECIPES[args.task]
    bad = [f for f in flags if f.split("=")[0] in MANAGED]
    if bad:
        raise UserError(f"{', '.join(bad)} after --: the sweep sets {', '.join(MANAGED)} for each run itself (each "
                        "run's seed is its index: pick them with --num and --runs)")
    results = args.results_dir or recipe.results_dir
    check_writable_folder(results, "results", "--results-dir")
    parser = script_parser(recipe)
    parser.allow_abbrev = False  # else `-- --see 7` would give every run seed 7, past the check above
    out, finished, first = [], [], None
    for num in range(args.num, args.num + args.runs):
        for mode in parse_modes(args.modes):
            argv = [*flags, "--mode", mode, "--num", str(num), "--results-dir", results]
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    run_args = parser.parse_args(argv)
            except SystemExit as e:
                if e.code == 0:  # -- --help: the run script's help, printed; nothing to plan
                    raise
                raise UserError(f"flags for every run: {err.getvalue().strip().split('error: ', 1)[-1]}") from None
            check_flags(run_args)  # what would stop every run (a missing --init-emb file, no CUDA): once, here
            cfg = make_config(recipe, run_args, num)  # ConfigError (a UserError) for a bad value
            run = SweepRun(args.task, mode, num, results, tuple(flags), cfg.stem)
            if run.outcome()[0] in FINISHED:  # skipped, so it must be this run: checked below
                run = replace(run, finished=True)
                finished.append((cfg, run))
            out.append(run)
            if first is None:  # every run reads the data as this one does (the flags are shared)
                first = (cfg, run_args)
    # The runs' data, read as each run reads it, once and before any run starts: a missing dataset is
    # one error here, not one per run, and a download happens here once (runs started together would
    # race to write the same files). It also tells whether a finished run saw this data.
    cfg0, args0 = first
    starts = len(finished) < len(out)
    try:
        data = load_data(cfg0, download=starts)
    except UserError as e:
        if starts:
            alt = offline_alternative(recipe, args0) if isinstance(e, DatasetMissing) else None
            raise UserError(f"{e}" + (f"; offline, {alt[0]}: add {' '.join(alt[1])} to the runs' flags (after --)"
                                      if alt else "")) from None
        data = None  # every run is finished and none will read it; their settings are compared still
    for cfg, run in finished:
        check_finished_is_this_run(cfg, run.files(), data, " ".join(flags))
    return out


def pick_gpus(args: argparse.Namespace) -> list[int]:
    """The GPUs of a local sweep: --gpus (checked against this machine's), else every visible one."""
    import torch

    count = torch.cuda.device_count()
    if args.gpus is None:
        return list(range(count))
    try:
        gpus = [int(g) for g in args.gpus.split(",") if g.strip()]
    except ValueError:
        raise UserError(f"--gpus must be GPU indices like 0,1, got {args.gpus!r}") from None
    missing = [g for g in gpus if not 0 <= g < count]
    if missing or not gpus:
        raise UserError(f"--gpus {args.gpus}: this machine has {count} visible GPU(s)"
                        + (f" (0..{count - 1})" if count else "") + f"; {', '.join(map(str, missing)) or 'none'} "
                        "not among them")
    return gpus


# ----------------------------------------------------------------------------- local
@dataclass
class Progress:
    """What happened to each run of a local sweep."""

    statuses: dict[str, str] = field(default_factory=dict)  # stem -> one of KINDS
    exit_codes: dict[str, int] = field(default_factory=dict)  # stem -> exit code of a run that ended in "error"
    KINDS = ("complete", "running", "failed", "error", "held", "interrupted")

    def count(self, what: str) -> int:
        return sum(s == what for s in self.statuses.values())

    def line(self) -> str:
        return ", ".join(f"{self.count(k)} {k}" for k in self.KINDS if self.count(k))


class LocalSweep:
    """Up to ``jobs`` runs at once, as child processes; stop() asks them all to stop."""

    def __init__(self, runs: list[SweepRun], jobs: int, gpus: list[int]):
        self.runs, self.jobs, self.gpus = runs, jobs, gpus
        self.threads = max(1, (os.cpu_count() or 1) // jobs)
        self.running: dict[subprocess.Popen, tuple[SweepRun, int | None]] = {}
        self.progress = Progress()
        self.stops = 0  # stop requests so far (SIGINT/SIGTERM to the sweep)

    def stop(self, signum=None, frame=None) -> None:
        """First request: every run checkpoints and stops (SIGTERM); a second: they stop at once."""
        self.stops += 1
        for p in self.running:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM if self.stops == 1 else signal.SIGINT)

    def stop_and_wait(self) -> None:
        """The runs started so far write their checkpoint and stop (a Ctrl-C meanwhile stops them at once)."""
        if self.running:
            if not self.stops:
                self.stop()
            for p in self.running:
                p.wait()

    def free_gpu(self) -> int | None:
        if not self.gpus:
            return None
        busy = [g for _, g in self.running.values()]
        return min(self.gpus, key=lambda g: (busy.count(g), self.gpus.index(g)))

    def start(self, run: SweepRun) -> None:
        logs = Path(run.results_dir) / "sweep_logs"
        logs.mkdir(parents=True, exist_ok=True)
        gpu = self.free_gpu()
        with open(logs / f"{run.stem}.log", "ab") as log:  # the child keeps its own descriptor
            log.write(f"\n$ {' '.join(run.command())}\n".encode())
            log.flush()
            # a session of its own: a Ctrl-C in the terminal reaches the sweep only, which passes it on once
            p = subprocess.Popen(run.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=child_env(gpu, self.threads))
        self.running[p] = (run, gpu)
        self.progress.statuses[run.stem] = "running"
        if self.stops:  # a stop that came while it was being started
            p.send_signal(signal.SIGTERM)

    def finish(self, p: subprocess.Popen) -> None:
        run, _ = self.running.pop(p)
        status, _ = run.outcome()
        # The exit code first: a record can be another process's (a finished run of other settings that the
        # child refused, exit 1) or an interrupted run the child would not resume (other flags, exit 1).
        # Stopped: at a checkpoint (130), or before it trained at all (killed while loading data).
        if p.returncode == 0 and status == "complete":
            kind = "complete"
        elif p.returncode == 130:  # (an --overwrite run stopped early leaves the earlier run's record as it was)
            kind = "interrupted"
        elif status == "failed":  # the run's own verdict (a non-finite loss), a stop or not: not retried
            kind = "failed"
        elif self.stops and status != "complete":
            kind = "interrupted"
        elif p.returncode == 0 and run.files().holder() is not None:  # another process took the run first
            kind = "held"
        else:  # ended without a verdict (bad input, a refusal, a crash, killed): its log says why
            kind = "error"
            self.progress.exit_codes[run.stem] = p.returncode
        self.progress.statuses[run.stem] = kind

    def pending(self) -> list[SweepRun]:
        """The runs to start: all but those finished when the sweep was planned and those another process
        holds."""
        out = []
        for run in self.runs:
            status, _ = run.outcome()
            files = run.files()
            if run.finished and status in FINISHED:
                self.progress.statuses[run.stem] = status
            elif files.holder() is not None:
                self.progress.statuses[run.stem] = "held"
            else:
                out.append(run)
        return out

    def run(self) -> int:
        from tqdm.auto import tqdm

        todo = self.pending()
        old = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with tqdm(total=len(self.runs), initial=len(self.runs) - len(todo), unit="run", dynamic_ncols=True,
                      desc=f"sweep {self.runs[0].task}") as bar:
                while todo or self.running:
                    while todo and not self.stops and len(self.running) < self.jobs:
                        self.start(todo.pop(0))
                        bar.set_postfix_str(self.progress.line())
                    for p in [p for p in self.running if p.poll() is not None]:
                        self.finish(p)
                        bar.set_postfix_str(self.progress.line(), refresh=False)
                        bar.update(1)
                    if self.stops:  # nothing new starts; the running ones are stopping
                        todo = []
                    time.sleep(0.2)
        except BaseException:  # the sweep's own error (a log it cannot open): no run goes on with nobody watching it
            self.stop_and_wait()
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return 130 if self.stops else 0


def summary(runs: list[SweepRun], progress: Progress | None = None) -> tuple[str, bool]:
    """The table of the runs, and whether every run is complete."""
    lines = [f"{'run':<32} {'status':<12} test error %"]
    all_done = True
    for run in runs:
        status, err = run.outcome()
        shown = (progress.statuses.get(run.stem) if progress else None) or status  # this sweep's verdict, if any
        all_done &= shown == "complete"
        if shown == "held":
            shown = "held by another process"
        elif shown == "error" and progress:
            shown = f"error (exit {progress.exit_codes.get(run.stem)})"
        number = "" if err is None or shown != "complete" else f"{err:.2f}"  # a refused record is another run's
        lines.append(f"{run.stem:<32} {shown:<12} {number}")
    return "\n".join(lines), all_done


# ----------------------------------------------------------------------------- slurm
class SweepTask:
    """What one Slurm array task runs: the run's command as a child process. submitit calls
    :meth:`checkpoint` on SIGUSR1 (time limit or preemption): the child is asked to stop (it writes
    a checkpoint) and the same task is resubmitted, which resumes the run."""

    def __call__(self, run: SweepRun) -> dict:
        self._proc = subprocess.Popen(run.command(), env=child_env(None, None))
        code = self._proc.wait()
        status, err = run.outcome()
        if code != 0 or status != "complete":  # a complete record the child refused is another run's
            raise RuntimeError(f"{run.stem}: exit code {code}, record {status}")
        return {"run": run.stem, "status": status, "test_error_pct": err}

    def checkpoint(self, run: SweepRun):
        import submitit

        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # (it may have had SIGUSR1 from Slurm already: the same stop)
            try:
                proc.wait(timeout=SIGNAL_DELAY_S - 20)
            except subprocess.TimeoutExpired:
                proc.kill()
        return submitit.helpers.DelayedSubmission(SweepTask(), run)


def require_slurm():
    """submitit, where it is installed and Slurm's sbatch and srun are on the PATH; UserError otherwise."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor slurm needs submitit, which is not installed: {INSTALL}") from None
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]  # submitit submits with both
    if missing:
        raise UserError(f"--executor slurm needs Slurm's {' and '.join(missing)} on the PATH (not found); run the sweep "
                        "on a machine that submits to your cluster, or use --executor local")
    return submitit


def slurm_executor(args: argparse.Namespace, folder: Path, submitit):
    """submitit's SlurmExecutor with the sweep's options (``submitit``: from :func:`require_slurm`)."""
    # each time limit reached is a checkpoint and a requeue; a long run may need many (submitit's default: 3)
    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_REQUEUES)
    params = {ours: getattr(args, ours) for ours in SLURM_OPTIONS if getattr(args, ours) is not None}
    # SIGUSR1 before the limit (submitit's default would be USR2): the task's submitit listens for it, and
    # the training loop treats it as SIGTERM
    ex.update_parameters(job_name=f"labelemb-{args.task}", signal_delay_s=SIGNAL_DELAY_S,
                         additional_parameters={"signal": f"USR1@{SIGNAL_DELAY_S}"}, array_parallelism=args.jobs or 256,
                         setup=[f"export PYTHONPATH={PACKAGE_PARENT}${{PYTHONPATH:+:$PYTHONPATH}}",
                                "export SUBMITIT_PREEMPT_SIGNAL=USR1"],
                         **{SLURM_OPTIONS[k]: v for k, v in params.items()})
    return ex


def submit(executor, runs: list[SweepRun]) -> list:
    """One array task per run (through any submitit executor: Slurm's, or the local one in tests)."""
    return executor.map_array(SweepTask(), runs)


def run_slurm(args: argparse.Namespace, runs: list[SweepRun], submitit) -> int:
    todo = [r for r in runs if not r.finished]
    if not todo:
        print(summary(runs)[0])
        print("every run is complete already: nothing submitted")
        return 0
    folder = Path(todo[0].results_dir) / "slurm_logs" / "%j"
    jobs = submit(slurm_executor(args, folder, submitit), todo)
    array_id = jobs[0].job_id.split("_")[0]
    print(f"submitted Slurm job array {array_id}: {len(todo)} task(s), at most {args.jobs or 256} at once "
          f"({len(runs) - len(todo)} run(s) complete already)")
    print(f"logs: {folder.parent}/{array_id}_*")
    print(f"watch: squeue -j {array_id}   then: labelemb-report {todo[0].results_dir}")
    return 0


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    own, flags = split_argv(sys.argv[1:] if argv is None else argv)
    p = build_parser()
    args = p.parse_args(own)
    prog = p.prog
    try:
        check_sweep_args(args)
        # what the executor needs first: planning reads the data, which may mean a download
        if args.executor == "slurm":
            submitit = require_slurm()
            return run_slurm(args, plan_runs(args, flags), submitit)
        gpus = pick_gpus(args)
        runs = plan_runs(args, flags)
        sweep = LocalSweep(runs, args.jobs or max(1, len(gpus)), gpus)
        code = sweep.run()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be written after all, a full disk
        print(f"{prog}: error: cannot write {e.filename or ''}: {e.strerror or e}; free space or choose another "
              "--results-dir, then run the same command again", file=sys.stderr)
        return 2
    table, all_done = summary(runs, sweep.progress)
    print(table)
    if code == 130:
        print(f"{prog}: stopped; every run that had begun training wrote a checkpoint. The same command continues "
              "the sweep.", file=sys.stderr)
        return 130
    if not all_done:
        again = " ".join([f"{runs[0].task}.py", *runs[0].flags, "--results-dir", runs[0].results_dir])
        print(f"{prog}: not every run is complete ({sweep.progress.line()}); see "
              f"{Path(runs[0].results_dir) / 'sweep_logs'}/<run>.log. The same command starts the interrupted, held "
              f"and error ones again; a failed run (a non-finite loss) is not retried: retrain it with python3 "
              f"{again} --mode M --num N --overwrite", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # run the module's own copy, so that Slurm tasks unpickle labelemb.sweep.SweepTask
    from labelemb.sweep import main as _main

    sys.exit(_main())
