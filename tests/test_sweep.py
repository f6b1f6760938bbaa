"""labelemb-sweep: many runs at once on this machine, and as a Slurm job array through submitit
(a stand-in sbatch records what it is given; submitit's local executor runs the same task)."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, make_mnist, run_script
from labelemb import sweep

TIMING = {"train_seconds", "time_per_epoch", "epoch_seconds"}
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _comparable(rec: dict) -> dict:
    rec = {k: v for k, v in rec.items() if k not in TIMING | {"config", "env"}}
    rec["curve"] = [{k: v for k, v in row.items() if k != "train_seconds"} for row in rec["curve"]]
    return rec


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def _sweep(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labelemb.sweep", *argv], env=kw.pop("env", ENV), cwd=kw.pop("cwd", ROOT),
                          capture_output=True, text=True, timeout=600, **kw)


def _flags(data: Path, *extra: str) -> list[str]:
    return ["--", "--data", str(data), "--val-size", "20", *extra]


# ----------------------------------------------------------------------------- local
def test_interrupted_sweep_continues_equals_an_uninterrupted_one_then_has_nothing_to_do(tmp_path, capsys, one_thread):
    # 4 runs (2 modes x 2 seeds), 2 at a time
    data = make_mnist(tmp_path / "m", n_train=620)  # 120 steps of 5 per epoch
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = ["--batch-size", "5", "--epochs", "2"]
    for mode in ("baseline", "emb"):  # the same runs as one --runs sweep each, uninterrupted
        r = run_script("mlp.py", "--mode", mode, "--runs", "2", "--data", str(data), "--val-size", "20",
                       "--results-dir", str(ref), "--quiet", *common, capsys=capsys)
        assert r.returncode == 0, r.stderr
    args = ["mlp", "--modes", "baseline,emb", "--runs", "2", "--jobs", "2", "--results-dir", str(out),
            *_flags(data, *common)]
    proc = subprocess.Popen([sys.executable, "-m", "labelemb.sweep", *args], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.glob("*.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)  # a run has finished its first epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "The same command continues the sweep" in err
    statuses = [json.loads(p.read_text())["status"] for p in out.glob("*.json")]
    assert "interrupted" in statuses and "running" not in statuses
    r = _sweep(*args)
    assert r.returncode == 0, r.stderr
    for mode in ("baseline", "emb"):
        for n in (0, 1):
            stem = f"mnist_mlp_{mode}_{n}"
            a, b = (json.loads((d / f"{stem}.json").read_text()) for d in (ref, out))
            assert _comparable(a) == _comparable(b), stem  # CPU, one thread each: bitwise
            assert (out / "sweep_logs" / f"{stem}.log").exists()
    assert np.array_equal(np.load(ref / "mnist_mlp_emb_1_emb.npy"), np.load(out / "mnist_mlp_emb_1_emb.npy"))
    assert "mnist_mlp_emb_1" in r.stdout and "complete" in r.stdout
    before = _snapshot(out)
    r = _sweep(*args)
    assert r.returncode == 0 and _snapshot(out) == before  # every run complete: nothing started, nothing written


def test_the_sweep_reads_the_data_once_before_any_run_and_downloads_it_there(tmp_path, capsys, monkeypatch):
    # runs started together would race to download into one folder, or each fail on missing data
    from labelemb import data as data_mod
    from labelemb.errors import DatasetMissing

    checkout, out = tmp_path / "checkout", tmp_path / "r"
    checkout.mkdir()
    make_mnist(tmp_path / "shared" / "data" / "mnist")  # this project's MNIST, beside the checkout (SPEC §4)
    monkeypatch.chdir(checkout)
    fetched = []

    def offline(root, name, why, find):
        fetched.append(root)
        raise DatasetMissing(f"{why}, and downloading it failed (no network in this test)")

    monkeypatch.setattr(data_mod, "_download", offline)
    argv = ["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(out), "--", "--dry-run", "--val-size", "20",
            "--batch-size", "20"]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "mnist not found in data" in err, err
    assert err.strip().endswith("add --data ../shared/data/mnist to the runs' flags (after --)")
    assert fetched == [Path("data")] and not out.exists() and not (checkout / "data").exists()

    def online(root, name, why, find):  # a machine with a network: the files arrive
        fetched.append(root)
        make_mnist(root)
        return find()

    monkeypatch.setattr(data_mod, "_download", online)
    assert sweep.main(argv) == 0, capsys.readouterr().err
    assert len(fetched) == 2  # once, here: the run (a process of its own, unpatched) found the files
    assert json.loads((out / "mnist_mlp_emb_0.json").read_text())["status"] == "complete"


class _Ended:
    """What LocalSweep.finish reads of a child process that has ended."""

    def __init__(self, returncode: int):
        self.returncode = returncode


def test_a_run_another_process_took_is_held_and_a_crash_is_an_error_not_a_failure(tmp_path):
    from labelemb.results import RunFiles

    out = tmp_path / "r"
    taken, crashed = (sweep.SweepRun("mlp", "emb", n, str(out), (), f"mnist_mlp_emb_{n}") for n in (0, 1))
    other = RunFiles(out, taken.stem)
    other.acquire_lock()  # another sweep on the same folder started run 0 first: the child skipped it
    (out / f"{taken.stem}.json").write_text(json.dumps({"status": "running"}))
    local = sweep.LocalSweep([taken, crashed], jobs=2, gpus=[])
    a, b = _Ended(0), _Ended(2)  # run 1 ended with exit 2 and wrote no record
    local.running = {a: (taken, None), b: (crashed, None)}
    local.finish(a), local.finish(b)
    assert local.progress.statuses == {taken.stem: "held", crashed.stem: "error"}
    table, done = sweep.summary([taken, crashed], local.progress)
    assert "held by another process" in table and "error (exit 2)" in table and not done
    assert [r.stem for r in local.pending()] == [crashed.stem]  # the error is tried again, the held run is not


def test_a_glance_at_a_runs_lock_does_not_block_the_run(tmp_path, monkeypatch):
    import fcntl

    from labelemb import results
    from labelemb.results import RunFiles, RunLocked

    files = RunFiles(tmp_path, "mnist_mlp_emb_0")
    fd = os.open(files.lock, os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what holder() takes for an instant (another sweep looking)
    waits = []

    def sleep(seconds):  # the glance ends while acquire_lock waits
        waits.append(seconds)
        os.close(fd)

    monkeypatch.setattr(results.time, "sleep", sleep)
    files.acquire_lock()  # waits the glance out
    monkeypatch.undo()
    assert len(waits) == 1
    assert RunFiles(tmp_path, files.stem).holder() == os.getpid()
    with pytest.raises(RunLocked, match="is being trained by process"):  # a run being trained does block
        RunFiles(tmp_path, files.stem).acquire_lock()
    files.release_lock()


def test_a_run_is_complete_only_when_its_child_says_so(tmp_path):
    # The record a child leaves can be another process's: a finished run of other settings that the child
    # refused (exit 1; it must not count as this sweep's), or an interrupted run it would not resume with
    # other flags (exit 1; the same command would only refuse again: an error, with its log).
    out = tmp_path / "r"
    out.mkdir()
    statuses = {0: ("complete", 0), 1: ("complete", 1), 2: ("interrupted", 1), 3: ("failed", 1),
                4: ("interrupted", 130)}
    runs = [sweep.SweepRun("mlp", "emb", n, str(out), (), f"mnist_mlp_emb_{n}") for n in statuses]
    for run, (status, _) in zip(runs, statuses.values()):
        (out / f"{run.stem}.json").write_text(json.dumps({"status": status, "reported": {"test_error_pct": 1.5}}))
    local = sweep.LocalSweep(runs, jobs=len(runs), gpus=[])
    ended = {run: _Ended(code) for run, (_, code) in zip(runs, statuses.values())}
    local.running = {e: (run, None) for run, e in ended.items()}
    for e in ended.values():
        local.finish(e)
    assert [local.progress.statuses[r.stem] for r in runs] == ["complete", "error", "error", "failed", "interrupted"]
    table, done = sweep.summary(runs, local.progress)
    assert not done and "error (exit 1)" in table
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert rows["mnist_mlp_emb_0"].endswith("1.50") and not rows["mnist_mlp_emb_1"].endswith("1.50")
    assert sweep.summary(runs[:1], local.progress)[1]  # all complete: done
    # skipped without a child only when it was finished, and checked, when the sweep was planned: a record
    # that appeared since may be another process's run of other settings, which its child would refuse
    planned = dataclasses.replace(runs[0], finished=True)
    assert [r.stem for r in sweep.LocalSweep([planned, runs[1]], jobs=1, gpus=[]).pending()] == [runs[1].stem]
    # a stop of the sweep does not hide a run's own verdict, nor turn another's complete record into its own
    stopped = sweep.LocalSweep(runs, jobs=len(runs), gpus=[])
    stopped.stops = 1
    ended = {run: _Ended(code) for run, (_, code) in zip(runs, statuses.values())}
    stopped.running = {e: (run, None) for run, e in ended.items()}
    for e in ended.values():
        stopped.finish(e)
    assert [stopped.progress.statuses[r.stem] for r in runs] == ["complete", "error", "interrupted", "failed",
                                                                 "interrupted"]


def test_the_retrain_hint_carries_the_sweeps_flags(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    code = sweep.main(["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(out),
                       "--", "--data", str(data), "--val-size", "20", "--batch-size", "10", "--epochs", "1",
                       "--lr", "1e30"])  # diverges: the run fails
    err = capsys.readouterr().err
    assert code == 1 and "1 failed" in err, err
    flags = f"--data {data} --val-size 20 --batch-size 10 --epochs 1 --lr 1e30"
    assert f"python3 mlp.py {flags} --results-dir {out} --mode M" in err


def test_a_finished_run_of_other_settings_stops_the_sweep_before_it_starts(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    r = run_script("mlp.py", "--mode", "emb", "--data", str(data), "--val-size", "20", "--results-dir", str(out),
                   "--dry-run", "--quiet", capsys=capsys)
    assert r.returncode == 0, r.stderr
    before = _snapshot(out)
    code = sweep.main(["mlp", "--modes", "paper", "--runs", "1", "--results-dir", str(out), *_flags(data)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{out / 'mnist_mlp_emb_0.json'} holds a finished run 0 with other settings: epochs 1 (now 15)" in err
    assert (f"train that run again: python3 mlp.py --data {data} --val-size 20 --mode emb --num 0 --results-dir "
            f"{out} --overwrite") in err  # the sweep's own flags and folder: never the committed default folder
    assert _snapshot(out) == before and not (out / "sweep_logs").exists()  # nothing started
    other = make_mnist(tmp_path / "other", seed=1)  # the same settings on other files
    code = sweep.main(["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(out), *_flags(other, "--dry-run")])
    err = capsys.readouterr().err
    assert code == 2 and f"other settings: the data of {data} (now {other}, other files)" in err, err
    assert _snapshot(out) == before


class _Sleeper(sweep.SweepRun):
    """A run whose child only waits to be stopped (SIGTERM: exit 130, as a run at its checkpoint)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(130)); "
                "time.sleep(60)"]


def test_a_run_that_cannot_be_started_stops_those_already_running(tmp_path):
    out = tmp_path / "r"
    runs = [_Sleeper("mlp", "emb", n, str(out), (), f"mnist_mlp_emb_{n}") for n in (0, 1)]
    (out / "sweep_logs" / f"{runs[1].stem}.log").mkdir(parents=True)  # its log cannot be opened
    local = sweep.LocalSweep(runs, jobs=2, gpus=[])
    t0 = time.monotonic()
    with pytest.raises(IsADirectoryError):
        local.run()
    (child,) = local.running  # the first run's child, started before the error
    assert child.poll() is not None and time.monotonic() - t0 < 30  # stopped and waited for, not left training


def test_each_run_sees_its_gpu_as_the_sweep_numbers_it_and_a_share_of_the_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the sweep's GPU 0 is the machine's 2
    assert [sweep.child_env(g, None)["CUDA_VISIBLE_DEVICES"] for g in (0, 1)] == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    envs = []

    class Popen:
        def __init__(self, cmd, env, **kw):
            envs.append(env)

    monkeypatch.setattr(sweep.subprocess, "Popen", Popen)
    runs = [sweep.SweepRun("mlp", "emb", n, str(tmp_path), (), f"mnist_mlp_emb_{n}") for n in (0, 1)]
    local = sweep.LocalSweep(runs, jobs=2, gpus=[0, 1])
    for run in runs:
        local.start(run)
    threads = str(max(1, (os.cpu_count() or 1) // 2))  # with GPUs too: two runs must not each take every core
    assert [(e["CUDA_VISIBLE_DEVICES"], e["OMP_NUM_THREADS"]) for e in envs] == [("0", threads), ("1", threads)]


def test_a_record_that_is_not_a_run_records_object_is_unreadable_not_a_crash(tmp_path):
    run = sweep.SweepRun("mlp", "emb", 0, str(tmp_path), (), "mnist_mlp_emb_0")
    run.files().record.write_text("[]")
    assert run.outcome() == ("unreadable", None)
    run.files().record.write_text(json.dumps({"status": "complete", "reported": ["x"]}))
    assert run.outcome() == ("complete", None)


def test_help_of_the_runs_flags_is_the_scripts_help(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(tmp_path / "r"), "--", "--help"])
    out, err = capsys.readouterr()
    assert e.value.code == 0 and "--epochs" in out and "error" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,needle", [
    (["cnn3", "--modes", "emb", "--runs", "2"], "invalid choice: 'cnn3'"),
    (["mlp", "--modes", "emb,soft", "--runs", "2"], "unknown mode(s) soft"),
    (["mlp", "--modes", "emb", "--runs", "0"], "--runs must be >= 1"),
    (["mlp", "--modes", "emb", "--runs", "2", "--jobs", "0"], "--jobs must be >= 1"),
    (["mlp", "--modes", "emb", "--runs", "2", "--gpus", "7"], "7 not among them"),
    (["mlp", "--modes", "emb", "--runs", "2", "--partition", "gpu"], "--partition is a Slurm option"),
    (["mlp", "--modes", "emb", "--runs", "2", "--executor", "slurm"], "--executor slurm needs --time MIN"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--num", "3"], "the sweep sets --mode, --num"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--seed", "3"], "each run's seed is its index"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--see", "3"], "unrecognized arguments: --see 3"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--overw"], "unrecognized arguments: --overw"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--tau", "0"], "--tau must be > 0"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--init-emb", "nowhere.npy"],
     "--init-emb nowhere.npy: no such file"),
    (["mlp", "--modes", "emb", "--runs", "2", "--", "--epochs", "x"], "flags for every run: argument --epochs"),
])
def test_bad_input_one_line_nothing_started(tmp_path, capsys, argv, needle):
    out = tmp_path / "r"
    if "--" not in argv:
        argv = [*argv, "--results-dir", str(out)]
    else:
        i = argv.index("--")
        argv = [*argv[:i], "--results-dir", str(out), *argv[i:]]
    with pytest.raises(SystemExit) if needle.startswith("invalid choice") else _no_exit():
        code = sweep.main(argv)
        assert code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out.exists()


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------- slurm
SBATCH = """#!/bin/sh
# a stand-in for Slurm's sbatch: keep what it was given, answer as sbatch does
cp "$1" "$SBATCH_RECORD/script.sh"
echo "$@" > "$SBATCH_RECORD/args.txt"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def fake_sbatch(tmp_path):
    pytest.importorskip("submitit")
    bin_dir, record = tmp_path / "bin", tmp_path / "record"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it before it submits
    for f in ("sbatch", "srun"):
        (bin_dir / f).chmod(0o755)
    return dict(ENV, PATH=f"{bin_dir}{os.pathsep}{ENV['PATH']}", SBATCH_RECORD=str(record)), record


def test_slurm_array_carries_the_options_and_each_task_its_run(tmp_path, fake_sbatch):
    env, record = fake_sbatch
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    r = _sweep("mlp", "--modes", "baseline,emb", "--runs", "2", "--jobs", "2", "--results-dir", str(out),
               "--executor", "slurm", "--partition", "gpu", "--time", "60", "--gpus-per-task", "1",
               "--cpus-per-task", "4", "--mem", "16G", "--account", "lab", *_flags(data, "--dry-run"), env=env)
    assert r.returncode == 0, r.stderr
    assert "submitted Slurm job array 4242: 4 task(s), at most 2 at once" in r.stdout
    assert "squeue -j 4242" in r.stdout
    script = (record / "script.sh").read_text()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --time=60", "#SBATCH --gpus-per-task=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G", "#SBATCH --account=lab",
                 f"#SBATCH --signal=USR1@{sweep.SIGNAL_DELAY_S}", "#SBATCH --job-name=labelemb-mlp"):
        assert line in script, line
    import submitit

    tasks = {}
    for i in range(4):
        delayed = submitit.helpers.DelayedSubmission.load(next(out.glob(f"slurm_logs/4242_{i}/4242_{i}_submitted.pkl")))
        run = delayed.args[0]
        tasks[i] = (run.mode, run.num, run.stem)
        assert isinstance(delayed.function, sweep.SweepTask) and "--dry-run" in run.flags
    assert tasks == {0: ("baseline", 0, "mnist_mlp_baseline_0"), 1: ("emb", 0, "mnist_mlp_emb_0"),
                     2: ("baseline", 1, "mnist_mlp_baseline_1"), 3: ("emb", 1, "mnist_mlp_emb_1")}


def test_slurm_needs_submitit_and_sbatch(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    argv = ["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(tmp_path / "r"), "--executor", "slurm",
            "--time", "60"]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "needs Slurm's sbatch and srun on the PATH" in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if it were not installed
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'pip install ".[slurm]"' in err
    assert not (tmp_path / "r").exists()


def _one_run(data: Path, out: Path, *extra: str) -> sweep.SweepRun:
    args = sweep.build_parser().parse_args(["mlp", "--modes", "emb", "--runs", "1", "--results-dir", str(out)])
    (run,) = sweep.plan_runs(args, ["--data", str(data), "--val-size", "20", *extra])
    return run


def test_submitits_local_executor_runs_a_task_to_completion(tmp_path):
    submitit = pytest.importorskip("submitit")
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    run = _one_run(data, out, "--dry-run")
    (job,) = sweep.submit(submitit.LocalExecutor(folder=str(tmp_path / "logs")), [run])
    result = job.result()
    assert result["status"] == "complete" and result["run"] == "mnist_mlp_emb_0"
    assert json.loads((out / "mnist_mlp_emb_0.json").read_text())["status"] == "complete"


def test_sigusr1_checkpoints_and_the_requeued_task_resumes_to_the_same_record(tmp_path, monkeypatch, capsys,
                                                                              one_thread):
    pytest.importorskip("submitit")
    data = make_mnist(tmp_path / "m", n_train=1020)  # 200 steps of 5 per epoch
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = ["--batch-size", "5", "--epochs", "2"]
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(ref), "--quiet", *common,
                   capsys=capsys)
    assert r.returncode == 0, r.stderr
    run = _one_run(data, out, *common)
    task = sweep.SweepTask()
    failure = []

    def call():
        try:
            task(run)
        except RuntimeError as e:  # the run stopped before its end: submitit would requeue it
            failure.append(str(e))

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the task's child inherits it: the reference's thread count
    t = threading.Thread(target=call)
    t.start()
    deadline = time.time() + 300
    while not (out / f"{run.stem}.ckpt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(task._proc.pid, signal.SIGUSR1)  # what Slurm sends before the time limit
    delayed = task.checkpoint(run)  # what submitit calls then
    t.join(timeout=300)
    assert failure and "record interrupted" in failure[0]
    assert json.loads((out / f"{run.stem}.json").read_text())["status"] == "interrupted"
    assert isinstance(delayed.function, sweep.SweepTask) and delayed.args == (run,)
    assert pickle.loads(pickle.dumps(delayed.args)) == (run,)  # it is pickled for the requeued task
    result = delayed.function(*delayed.args)  # the requeued task
    assert result["status"] == "complete"
    a, b = (json.loads((d / f"{run.stem}.json").read_text()) for d in (ref, out))
    assert _comparable(a) == _comparable(b)
