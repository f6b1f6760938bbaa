"""Nothing lost, nothing mixed: bad input and faults get one line and exit 2 (or the documented code),
and every file that existed before is byte-identical afterwards."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, make_cifar, make_mnist, run_script
from labelemb.data import load_cifar

STEM = "mnist_mlp_emb_0"


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} if folder.exists() else {}


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--quiet", *extra]


def _one_line(r, code: int, *needles: str) -> None:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def tiny(tmp_path):
    return make_mnist(tmp_path / "mnist", n_train=520), tmp_path / "results"  # 5 steps an epoch


@pytest.fixture
def finished(tiny, capsys):
    """A complete 1-epoch run (record, curve, plot, E, checkpoint)."""
    data, out = tiny
    assert run_script("mlp.py", *_args(data, out, "--epochs", "1"), capsys=capsys).returncode == 0
    return data, out


@pytest.fixture
def interrupted(tiny, capsys):
    """A run that stopped after epoch 2 of 3: its checkpoint, the one before it, record 'interrupted'."""
    data, out = tiny
    assert run_script("mlp.py", *_args(data, out, "--epochs", "2"), capsys=capsys).returncode == 0
    ckpt = out / f"{STEM}.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["config"]["epochs"] = 3  # as if stopped after epoch 2 of 3
    torch.save(state, ckpt)
    (out / f"{STEM}.ckpt.prev").write_bytes(ckpt.read_bytes())
    rec = out / f"{STEM}.json"
    record = json.loads(rec.read_text())
    record["status"], record["config"]["epochs"] = "interrupted", 3
    rec.write_text(json.dumps(record))
    return data, out


# ----------------------------------------------------------------------------- --overwrite checks first
@pytest.mark.parametrize("bad,needle", [(["--batch-size", "1000000000"], "--batch-size 1000000000 is larger"),
                                        (["--seed", str(2**64)], "--seed must be in [0, 2**64 - 3]")])
def test_overwrite_with_bad_settings_loses_nothing(finished, capsys, bad, needle):
    data, out = finished
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "1", "--overwrite", *bad), capsys=capsys)
    _one_line(r, 2, needle)
    assert _snapshot(out) == before


def test_overwrite_with_unwritable_tensorboard_folder_loses_nothing(interrupted, tmp_path, capsys):
    data, out = interrupted
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--overwrite", "--tensorboard", str(blocker / "tb")),
                   capsys=capsys)
    _one_line(r, 2, "TensorBoard log", "is a file, not a folder", "--tensorboard")
    assert "--results-dir" not in r.stderr
    assert _snapshot(out) == before


def test_overwrite_that_diverges_before_its_first_checkpoint_keeps_the_earlier_run(finished, capsys):
    data, out = finished
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "1", "--overwrite", "--lr", "1e30"), capsys=capsys)
    _one_line(r, 1, "non-finite loss", "the earlier run's files are kept as they were")
    assert _snapshot(out) == before


def test_overwrite_replaces_the_earlier_run_once_it_has_a_checkpoint(interrupted, capsys):
    data, out = interrupted
    old_ckpt = (out / f"{STEM}.ckpt").read_bytes()
    r = run_script("mlp.py", *_args(data, out, "--epochs", "1", "--overwrite", "--seed", "7"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / f"{STEM}.json").read_text())
    assert rec["status"] == "complete" and rec["seed"] == 7 and len(rec["epoch_seconds"]) == 1
    assert (out / f"{STEM}.ckpt").read_bytes() != old_ckpt
    assert not (out / f"{STEM}.ckpt.prev").exists()  # the earlier run's checkpoint is not kept as "previous"
    assert np.load(out / f"{STEM}_emb.npy").shape[0] == 1 and (out / f"{STEM}.png").exists()


def test_overwrite_whose_first_checkpoint_fills_the_disk_keeps_the_earlier_run(finished, capsys, monkeypatch):
    from labelemb import results

    data, out = finished
    before = _snapshot(out)
    real = results.atomic_write

    def full(path, payload, keep_previous=None, before_replace=None):
        if str(path).endswith(".ckpt"):  # the new checkpoint does not fit
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, payload, keep_previous, before_replace)

    monkeypatch.setattr(results, "atomic_write", full)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "1", "--overwrite", "--seed", "7"), capsys=capsys)
    _one_line(r, 2, "No space left on device")
    assert _snapshot(out) == before


# ----------------------------------------------------------------------------- --resume on other data
def test_resume_refuses_other_data(interrupted, tmp_path, capsys):
    data, out = interrupted
    other = make_mnist(tmp_path / "other", n_train=140)
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(other, out, "--epochs", "3", "--resume"), capsys=capsys)
    _one_line(r, 2, "was trained on other data", "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              f"--data {data.resolve()}")
    assert _snapshot(out) == before
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--resume"), capsys=capsys)  # the same data
    assert r.returncode == 0, r.stderr


def test_resume_refuses_other_class_names(tmp_path):
    from labelemb.cli import check_same_data
    from labelemb.data import load_dataset
    from labelemb.errors import UserError

    ds = load_dataset("mnist", make_mnist(tmp_path / "m"), val_size=20, download=False)
    ckpt = {"data": ds.source, "classes": [f"c{i}" for i in range(10)]}
    with pytest.raises(UserError, match="trained with the classes c0, c1"):
        check_same_data(ckpt, ds, "x.ckpt")
    check_same_data({"data": ds.source, "classes": ds.classes}, ds, "x.ckpt")  # the same: accepted


# ----------------------------------------------------------------------------- contradictions, numbers
@pytest.mark.parametrize("argv,needle", [
    (["--overwrite", "--resume"], "give one of them"),
    (["--seed", str(2**64 - 2)], "--seed must be in [0, 2**64 - 3]"),
    (["--seed", "-1"], "--seed must be in [0, 2**64 - 3]"),
    (["--num", str(2**64)], f"--num {2**64} is also the run's seed"),
    (["--num", str(2**64 - 4), "--runs", "3"], f"--num {2**64 - 2} is also the run's seed"),
])
def test_numbers_and_contradictions_refused_before_anything(tiny, capsys, argv, needle):
    data, out = tiny
    r = run_script("mlp.py", *_args(data, out, "--dry-run", *argv), capsys=capsys)
    _one_line(r, 2, needle)
    assert not out.exists()


# ----------------------------------------------------------------------------- messages that name the right thing
def test_incomplete_dataset_names_the_missing_file_only(tmp_path, capsys):
    data = make_mnist(tmp_path / "m")
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    r = run_script("mlp.py", *_args(data, tmp_path / "r", "--dry-run"), capsys=capsys)
    _one_line(r, 2, "incomplete", "t10k-labels-idx1-ubyte(.gz) missing", "3 of its 4")
    assert "train-images" not in r.stderr.split("downloading")[0] and not (tmp_path / "r").exists()
    c = make_cifar(tmp_path / "c", "cifar10")
    (c / "cifar-10-batches-py" / "data_batch_3").unlink()
    r = run_script("cifar10.py", "--data", str(c), "--dry-run", "--results-dir", str(tmp_path / "r"), capsys=capsys)
    _one_line(r, 2, "data_batch_3 missing")
    assert "data_batch_1" not in r.stderr.split("downloading")[0]


def test_resume_previous_without_one_names_the_previous(finished, capsys):
    data, out = finished
    rec = out / f"{STEM}.json"
    rec.write_text(rec.read_text().replace('"complete"', '"interrupted"'))
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "1", "--resume", "previous"), capsys=capsys)
    _one_line(r, 2, f"no checkpoint {out / STEM}.ckpt.prev", "--resume without 'previous' takes it")
    assert _snapshot(out) == before


def test_the_last_checkpoint_never_goes_missing_while_the_next_is_moved_in(tmp_path, monkeypatch):
    # the previous checkpoint is a second name of the file (a hard link), not the file renamed away: a
    # process that dies between the two steps leaves the last checkpoint where a resume looks for it
    from labelemb import results

    ckpt, prev = tmp_path / "r.ckpt", tmp_path / "r.ckpt.prev"
    results.atomic_write(ckpt, b"epoch 1", keep_previous=prev)
    results.atomic_write(ckpt, b"epoch 2", keep_previous=prev)
    assert ckpt.read_bytes() == b"epoch 2" and prev.read_bytes() == b"epoch 1"
    real = os.replace

    def killed(src, dst):
        if Path(dst) == ckpt:
            raise KeyboardInterrupt  # the process dies just before the new checkpoint moves in
        real(src, dst)

    monkeypatch.setattr(results.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(ckpt, b"epoch 3", keep_previous=prev)
    assert ckpt.read_bytes() == b"epoch 2" and prev.read_bytes() == b"epoch 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.ckpt", "r.ckpt.prev"]  # no temporary file left


def test_only_a_previous_checkpoint_is_not_trained_over(interrupted, capsys):
    # its last checkpoint is missing (e.g. a crash of an older version between its two renames): a plain
    # run, a --runs sweep and labelemb-sweep's runs must not start afresh and drop it
    data, out = interrupted
    (out / f"{STEM}.ckpt").unlink()
    before = _snapshot(out)
    for extra in ([], ["--runs", "1"]):
        r = run_script("mlp.py", *_args(data, out, "--epochs", "3", *extra), capsys=capsys)
        assert r.returncode != 0 and "--resume previous" in r.stderr, r.stderr
        assert _snapshot(out) == before
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--resume", "previous"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / f"{STEM}.json").read_text())["status"] == "complete"


def test_checkpoint_of_another_script_names_that_script(interrupted, capsys):
    data, out = interrupted
    for suffix in (".json", ".ckpt"):  # an mlp run under a cnn run's name
        (out / f"mnist_cnn_emb_0{suffix}").write_bytes((out / f"{STEM}{suffix}").read_bytes())
    before = _snapshot(out)
    r = run_script("cnn.py", *_args(data, out, "--epochs", "3", "--resume"), capsys=capsys)
    _one_line(r, 2, "is a run of mlp.py", "python3 mlp.py --resume")
    assert "--arch" not in r.stderr and "--task" not in r.stderr
    assert _snapshot(out) == before


def test_tensorboard_folder_checked_before_the_data_is_read(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run_script("mlp.py", *_args(tmp_path / "no_data_here", tmp_path / "r", "--dry-run", "--tensorboard",
                                    str(blocker / "tb")), capsys=capsys)
    _one_line(r, 2, "TensorBoard log")
    assert "mnist" not in r.stderr.split("error:")[1].split("TensorBoard")[0]  # not the data's error


def _hold_lock(lock: Path) -> subprocess.Popen:
    """Another process holding the run's lock (as a training process does)."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode()); print('held', flush=True); "
            "time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_run_being_trained_is_said_to_be_running(interrupted, capsys):
    data, out = interrupted
    holder = _hold_lock(out / f"{STEM}.lock")
    try:
        before = _snapshot(out)
        for extra in ([], ["--resume"]):
            r = run_script("mlp.py", *_args(data, out, "--epochs", "3", *extra), capsys=capsys)
            _one_line(r, 2, f"being trained by process {holder.pid} now", f"lock {out / STEM}.lock")
            assert "continue it with --resume" not in r.stderr
        assert _snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    # its holder is dead: the operating system released the lock
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--resume"), capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert not (out / f"{STEM}.lock").exists()


def test_a_lock_file_naming_this_very_process_does_not_block(tiny, capsys):
    data, out = tiny
    out.mkdir()
    (out / f"{STEM}.lock").write_text(f"{os.getpid()}\n")  # after a restart, pids are reused
    r = run_script("mlp.py", *_args(data, out, "--dry-run"), capsys=capsys)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------- tracebacks that are lines now
def test_checkpoint_missing_a_part_is_one_line(interrupted, capsys):
    data, out = interrupted
    ckpt = out / f"{STEM}.ckpt"
    state = torch.load(ckpt, weights_only=False)
    del state["optimizer"]
    torch.save(state, ckpt)
    before = _snapshot(out)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--resume"), capsys=capsys)
    _one_line(r, 2, "lacks optimizer", "--resume previous")
    assert _snapshot(out) == before


def test_checkpoint_with_wrong_shapes_is_one_line(interrupted, capsys):
    data, out = interrupted
    ckpt = out / f"{STEM}.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["model"] = {k: v[:1] for k, v in state["model"].items()}
    torch.save(state, ckpt)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "3", "--resume"), capsys=capsys)
    _one_line(r, 2, "the checkpoint's model does not fit this run")


@pytest.mark.parametrize("argv,needle", [(["--threads", "-1"], "--threads must be >= 0"),
                                         (["--out", "{blocker}/b.json"], "is a file, not a folder")])
def test_bench_flags_checked_before_timing(tmp_path, capsys, argv, needle):
    from labelemb import bench

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = [a.replace("{blocker}", str(blocker)) for a in argv]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and needle in err
    assert time.perf_counter() - t0 < 5  # refused before any timing
    assert blocker.read_text() == "x"


# ----------------------------------------------------------------------------- CIFAR pickles in both forms
def _resave_with_str_keys(folder: Path, protocol: int) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
        obj = {k.decode(): ([n.decode() for n in v] if k.endswith(b"names") else v) for k, v in obj.items()}
        p.write_bytes(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_resaved_under_python3_with_str_keys(tmp_path, name, protocol):
    original = load_cifar(make_cifar(tmp_path / "a", name), name, download=False)
    root = make_cifar(tmp_path / "b", name)
    _resave_with_str_keys(next(root.iterdir()), protocol)
    resaved = load_cifar(root, name, download=False)
    assert resaved.classes == original.classes
    for k in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(resaved, k), getattr(original, k)), k


def test_cifar_str_keyed_batch_lacking_keys_is_named(tmp_path, capsys):
    root = make_cifar(tmp_path / "c", "cifar10")
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({"images": b"", "labels": []}))
    r = run_script("cifar10.py", "--data", str(root), "--dry-run", "--results-dir", str(tmp_path / "r"),
                   capsys=capsys)
    _one_line(r, 2, "data_batch_2 lacks the key(s) data", "has images, labels")


# ----------------------------------------------------------------------------- signals, temporaries, umask
def _start(data: Path, out: Path, *extra: str, umask: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(ROOT / "mlp.py"), *_args(data, out, "--batch-size", "5", *extra)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)


def test_second_sigterm_exits_130(tmp_path):
    data, out = make_mnist(tmp_path / "m", n_train=2020), tmp_path / "r"
    proc = _start(data, out, "--epochs", "50")
    _wait_for(out / f"{STEM}.json", proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert json.loads((out / f"{STEM}.json").read_text())["status"] == "interrupted"
    assert (out / f"{STEM}.ckpt").exists()


def test_two_quick_sigints_leave_no_temporary_files(tmp_path):
    data, out = make_mnist(tmp_path / "m", n_train=2020), tmp_path / "r"
    for attempt in range(2):  # at different moments of the run
        proc = _start(data, out, "--epochs", "50", "--num", str(attempt))
        _wait_for(out / f"mnist_mlp_emb_{attempt}.json", proc)
        time.sleep(0.2 * attempt)
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        assert proc.returncode == 130
        assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_outputs_honour_the_umask(tmp_path):
    data, out = make_mnist(tmp_path / "m"), tmp_path / "r"
    proc = _start(data, out, "--dry-run", umask=0o002)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    for p in out.iterdir():
        assert p.stat().st_mode & 0o777 == 0o664, p.name


def test_stale_temporary_of_a_killed_writer_is_removed(finished, capsys):
    data, out = finished
    stale = out / f".{STEM}.ckpt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    assert run_script("mlp.py", *_args(data, out, "--epochs", "1", "--overwrite"), capsys=capsys).returncode == 0
    assert not stale.exists()


# ----------------------------------------------------------------------------- leftovers and half-truths
def test_failed_download_leaves_no_new_folders(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    r = run_script("mlp.py", "--data", str(root), "--results-dir", str(tmp_path / "r"), "--dry-run", capsys=capsys)
    assert r.returncode == 2
    assert sorted(p.name for p in root.rglob("*")) == ["keep.txt"]
    assert not (tmp_path / "r").exists()


def test_full_disk_names_the_file_and_the_record_says_interrupted(tiny, capsys, monkeypatch):
    from labelemb import results

    data, out = tiny
    real = results.atomic_write

    def full(path, payload, keep_previous=None, before_replace=None):
        if str(path).endswith(".ckpt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, payload, keep_previous, before_replace)

    monkeypatch.setattr(results, "atomic_write", full)
    r = run_script("mlp.py", *_args(data, out, "--epochs", "2"), capsys=capsys)
    _one_line(r, 2, f"cannot write ({out / STEM}.ckpt)", "No space left on device")
    rec = json.loads((out / f"{STEM}.json").read_text())
    assert rec["status"] == "interrupted" and "No space left on device" in rec["error"]


def test_divergence_before_any_checkpoint_says_so(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m", n_train=520), tmp_path / "r"
    r = run_script("mlp.py", *_args(data, out, "--epochs", "2", "--lr", "1e30"), capsys=capsys)
    _one_line(r, 1, "no checkpoint had been written yet")
    assert "last good checkpoint" not in r.stderr


# ----------------------------------------------------------------------------- sweeps
def test_one_broken_run_does_not_stop_a_sweep(tiny, capsys):
    data, out = tiny
    assert run_script("mlp.py", *_args(data, out, "--dry-run", "--num", "1"), capsys=capsys).returncode == 0
    (out / "mnist_mlp_emb_1.ckpt").write_bytes(b"not a checkpoint")
    rec = out / "mnist_mlp_emb_1.json"
    rec.write_text(rec.read_text().replace('"complete"', '"interrupted"'))
    r = run_script("mlp.py", *_args(data, out, "--dry-run", "--runs", "3"), capsys=capsys)
    assert r.returncode == 1
    assert "mnist_mlp_emb_1: error: checkpoint" in r.stderr and "1 of 3 runs did not complete" in r.stderr
    for n in (0, 2):
        assert json.loads((out / f"mnist_mlp_emb_{n}.json").read_text())["status"] == "complete"
    assert (out / "mnist_mlp_emb_1.ckpt").read_bytes() == b"not a checkpoint"


def test_a_stop_as_a_run_completes_starts_no_other_run(tiny, capsys, monkeypatch):
    from labelemb import cli

    data, out = tiny
    real = cli.train_one

    def train_one(cfg, data, device, files, args, stop, dist):
        record = real(cfg, data, device, files, args, stop, dist)
        stop.requested = "SIGTERM"  # as if it came during the run's last step: the run completed all the same
        return record

    monkeypatch.setattr(cli, "train_one", train_one)
    from labelemb.interrupt import SIGNALS

    handlers = {s: signal.getsignal(s) for s in SIGNALS}  # a process that stopped exits at the next signal:
    try:  # not this test process
        r = run_script("mlp.py", *_args(data, out, "--dry-run", "--runs", "3"), capsys=capsys)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    _one_line(r, 130, "interrupted by SIGTERM between two runs; the same command continues with the next run")
    assert json.loads((out / "mnist_mlp_emb_0.json").read_text())["status"] == "complete"
    assert not list(out.glob("mnist_mlp_emb_1*")) and not list(out.glob("mnist_mlp_emb_2*"))


# ----------------------------------------------------------------------------- the report writes only its own files
def _report(*argv: str, capsys) -> subprocess.CompletedProcess:
    from labelemb.report import main

    code = main(list(argv))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def test_report_refuses_a_folder_without_run_records(tmp_path, capsys):
    folder = tmp_path / "webapp"
    folder.mkdir()
    (folder / "tsconfig.json").write_text('{\n  // a comment\n  "strict": true\n}\n')
    (folder / "report.md").write_text("# My notes\n")
    (folder / "report.csv").write_text("a,b\n1,2\n")
    before = _snapshot(folder)
    r = _report(str(folder), capsys=capsys)
    _one_line(r, 2, "no run records")
    assert _snapshot(folder) == before


def test_report_never_replaces_a_file_it_did_not_write(finished, capsys):
    _, out = finished
    (out / "report.md").write_text("# My own notes about these runs\n")
    before = _snapshot(out)
    r = _report(str(out), capsys=capsys)
    _one_line(r, 2, f"{out / 'report.md'} exists and was not written by labelemb-report")
    assert _snapshot(out) == before


def test_report_rewrites_its_own_files_and_older_figures(finished, capsys):
    _, out = finished
    assert _report(str(out), capsys=capsys).returncode == 0
    curves = out / "curves.png"
    assert b"labelemb-report" in curves.read_bytes()[:4096]
    curves.write_bytes(curves.read_bytes().replace(b"labelemb-report", b"matplotlib-3.x"))  # as older reports wrote
    assert _report(str(out), capsys=capsys).returncode == 0  # report.md is ours: so are its figures
    assert b"labelemb-report" in curves.read_bytes()[:4096]


# ----------------------------------------------------------------------------- --overwrite stopped early
def _run_in_process(data: Path, out: Path, stop=None, replace: bool = False):
    from labelemb.cli import build_parser, make_config
    from labelemb.config import RECIPES
    from labelemb.data import load_dataset
    from labelemb.results import RunFiles
    from labelemb.train import run

    args = build_parser(RECIPES["mlp"]).parse_args(["--data", str(data), "--val-size", "20", "--results-dir", str(out),
                                                    "--quiet", "--epochs", "2", "--batch-size", "20"])
    cfg = make_config(RECIPES["mlp"], args, 0)
    ds = load_dataset("mnist", data, val_size=20, download=False)
    files = RunFiles(out, cfg.stem)
    if replace:
        files.replace_on_first_checkpoint()
    return run(cfg, ds, torch.device("cpu"), files, stop=stop)


def test_overwrite_stopped_inside_its_first_epoch_keeps_the_earlier_run(tiny):
    from conftest import StopAfter
    from labelemb.interrupt import Interrupted

    data, out = tiny
    _run_in_process(data, out)  # the earlier run, complete
    before = _snapshot(out)
    with pytest.raises(Interrupted) as e:
        _run_in_process(data, out, stop=StopAfter(3), replace=True)  # 25 steps an epoch: stopped at step 4
    assert e.value.kept == "the earlier run's files are kept as they were"
    assert _snapshot(out) == before
    with pytest.raises(Interrupted) as e:  # stopped inside its second epoch: its first checkpoint replaced the run
        _run_in_process(data, out, stop=StopAfter(25 + 3), replace=True)
    assert e.value.kept == ""
    rec = json.loads((out / f"{STEM}.json").read_text())
    assert rec["status"] == "interrupted" and len(rec["epoch_seconds"]) == 1
    assert not (out / f"{STEM}.png").exists()  # the earlier run's plot went with it


def test_a_held_record_is_written_as_it_was_held_record_and_curve_alike(tmp_path):
    # the held record is written at the first checkpoint, after the epoch's last point was added to
    # the curve: it must not take that point while its CSV (made when it was held) lacks it
    import csv

    from labelemb.results import RunFiles

    files = RunFiles(tmp_path, STEM)
    files.replace_on_first_checkpoint()
    row = {"epoch": 0.5, "step": 1, "train_acc": 0.5, "train_loss": 1.0, "test_acc": 0.5, "test_error_pct": 50.0}
    rec = {"format": "labelemb-run/1", "status": "running", "curve": [row]}
    files.write_record(rec)
    rec["curve"].append({**row, "epoch": 1.0, "step": 2})  # the live curve grows before the checkpoint
    assert files.save_checkpoint({"model": {}})
    written = json.loads(files.record.read_text())["curve"]
    rows = list(csv.DictReader(files.csv.open()))
    assert len(written) == len(rows) == 1 and [int(r["step"]) for r in rows] == [w["step"] for w in written]


def test_a_stale_record_without_a_checkpoint_is_no_work_to_keep(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "m", n_train=520), tmp_path / "r"
    out.mkdir()
    (out / f"{STEM}.json").write_text(json.dumps({"format": "labelemb-run/1", "status": "running"}))  # killed early
    r = run_script("mlp.py", *_args(data, out, "--epochs", "2", "--lr", "1e30", "--overwrite"), capsys=capsys)
    _one_line(r, 1, "non-finite loss", "no checkpoint had been written yet")
    assert json.loads((out / f"{STEM}.json").read_text())["status"] == "failed"  # not left saying "running"
