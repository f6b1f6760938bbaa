"""--tensorboard: the event file, read back with TensorBoard's own reader; resume without duplicates;
a clear refusal where tensorboard is not installed."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import StopAfter, make_mnist, run_script
from labelemb.cli import build_parser, make_config
from labelemb.config import RECIPES
from labelemb.data import load_dataset
from labelemb.interrupt import Interrupted
from labelemb.results import RunFiles
from labelemb.train import run

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
SCALARS = {"accuracy/train", "accuracy/val", "accuracy/test", "loss/train", "loss/val", "loss/test", "learning_rate",
           "hparam/test_error_pct"}


def _read(folder: Path):
    ea = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0,
                                                                         event_accumulator.IMAGES: 0})
    ea.Reload()
    return ea


def _steps(ea, tag: str) -> list[int]:
    return [e.step for e in ea.Scalars(tag)]


@pytest.mark.parametrize("mode", ["emb", "baseline"])
def test_dry_run_logs_every_point_and_the_soft_targets(mode, tmp_path, capsys):
    data, out = make_mnist(tmp_path / "mnist", n_train=520), tmp_path / "r"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(out), "--dry-run",
                   "--mode", mode, "--tensorboard", capsys=capsys)
    assert r.returncode == 0, r.stderr
    stem = f"mnist_mlp_{mode}_0"
    rec = json.loads((out / f"{stem}.json").read_text())
    assert rec["config"]["tensorboard"] == str((out / f"{stem}_tensorboard").resolve())
    ea = _read(out / f"{stem}_tensorboard")
    assert set(ea.Tags()["scalars"]) == SCALARS
    points = [row["step"] for row in rec["curve"]]
    assert points == [1, 2, 3]  # a dry run: 3 steps, an evaluation after each
    for tag in SCALARS - {"hparam/test_error_pct"}:
        assert _steps(ea, tag) == points, tag
    for row, acc, loss in zip(rec["curve"], ea.Scalars("accuracy/test"), ea.Scalars("loss/test"), strict=True):
        assert acc.value == pytest.approx(row["test_acc"]) and loss.value == pytest.approx(row["test_loss"])
    assert [e.value for e in ea.Scalars("learning_rate")] == pytest.approx([1e-3] * 3)
    (final,) = ea.Scalars("hparam/test_error_pct")
    assert final.value == pytest.approx(rec["reported"]["test_error_pct"]) and final.step == rec["reported"]["step"]
    if mode == "emb":  # softmax(E) once per epoch, after its last step; 10 labels of 25 pixels
        assert ea.Tags()["images"] == ["soft_targets"]
        assert [(e.step, e.width, e.height) for e in ea.Images("soft_targets")] == [(3, 250, 250)]
    else:
        assert ea.Tags()["images"] == []


def test_a_folder_per_run_under_the_given_dir(tmp_path, capsys):
    data, logs = make_mnist(tmp_path / "mnist"), tmp_path / "logs"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(tmp_path / "r"),
                   "--dry-run", "--quiet", "--runs", "2", "--tensorboard", str(logs), capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["mnist_mlp_emb_0", "mnist_mlp_emb_1"]
    assert all(list(p.glob("events.out.tfevents.*")) for p in logs.iterdir())
    # the same run of another results folder (a variant) would mix its log with this one: refused
    before = {p: p.read_bytes() for p in logs.rglob("*") if p.is_file()}
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(tmp_path / "r2"),
                   "--dry-run", "--quiet", "--tensorboard", str(logs), capsys=capsys)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{logs / 'mnist_mlp_emb_0'} holds the TensorBoard log of {tmp_path / 'r' / 'mnist_mlp_emb_0.json'}" in r.stderr
    assert {p: p.read_bytes() for p in logs.rglob("*") if p.is_file()} == before
    assert not [p for p in (tmp_path / "r2").rglob("*") if p.is_file()]
    spelt = tmp_path / "r2" / ".." / "r"  # its own log, by another spelling of its folder: replaced as usual
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(spelt),
                   "--dry-run", "--quiet", "--tensorboard", str(logs), "--overwrite", capsys=capsys)
    assert r.returncode == 0, r.stderr
    (tmp_path / "r").rename(tmp_path / "moved")  # a results folder moved: its log goes on with it
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(tmp_path / "moved"),
                   "--dry-run", "--quiet", "--tensorboard", str(logs), "--overwrite", capsys=capsys)
    assert r.returncode == 0, r.stderr
    assert (logs / "mnist_mlp_emb_0" / "labelemb_run.txt").read_text().strip() == \
        str((tmp_path / "moved" / "mnist_mlp_emb_0.json").resolve())


def test_refused_without_tensorboard(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("labelemb.cli.available", lambda: False)  # as where the package is not installed
    data, out = make_mnist(tmp_path / "mnist"), tmp_path / "r"
    r = run_script("mlp.py", "--data", str(data), "--val-size", "20", "--results-dir", str(out), "--tensorboard",
                   capsys=capsys)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "--tensorboard needs the tensorboard package" in r.stderr and "pip install tensorboard" in r.stderr
    assert not out.exists()


def test_resume_continues_the_log_without_duplicate_points(tmp_path):
    data_dir = make_mnist(tmp_path / "mnist", n_train=260, n_test=40)
    data = load_dataset("mnist", data_dir, val_size=20)

    def cfg(out: Path):
        args = build_parser(RECIPES["mlp"]).parse_args(["--data", str(data_dir), "--val-size", "20", "--batch-size",
                                                        "20", "--epochs", "3", "--quiet", "--results-dir", str(out),
                                                        "--tensorboard"])
        return make_config(RECIPES["mlp"], args, 0)

    def go(out: Path, resume=None, stop=None):
        files = RunFiles(out, "mnist_mlp_emb_0")
        files.dir.mkdir(exist_ok=True)
        return run(cfg(out), data, torch.device("cpu"), files, resume=resume, stop=stop), files

    ref, _ = go(tmp_path / "ref")
    with pytest.raises(Interrupted):
        go(tmp_path / "out", stop=StopAfter(12 + 8))  # 12 steps per epoch: 8 steps into epoch 2
    files = RunFiles(tmp_path / "out", "mnist_mlp_emb_0")
    # As after a crash: resume from the checkpoint of epoch 1, though the log already holds epoch 2's
    # first points; they are hidden (purge_step), then logged again once.
    state = files.load_checkpoint("previous")
    assert (state["epoch"], state["step"]) == (1, 0)
    rec, _ = go(tmp_path / "out", resume=state)
    a, b = _read(tmp_path / "ref" / "mnist_mlp_emb_0_tensorboard"), _read(Path(rec["config"]["tensorboard"]))
    points = [row["step"] for row in ref["curve"]]
    for tag in SCALARS - {"hparam/test_error_pct"}:
        assert _steps(b, tag) == _steps(a, tag) == points, tag
        assert [e.value for e in b.Scalars(tag)] == pytest.approx([e.value for e in a.Scalars(tag)], rel=1e-6), tag
    assert [e.step for e in b.Images("soft_targets")] == [12, 24, 36]


def test_overwrite_logs_nothing_before_its_first_checkpoint_then_only_the_new_run(tmp_path):
    # the earlier run's log stays as it was while a stop would still leave its other files so; at
    # the new run's first checkpoint its event files go with them (its hyper-parameters, at step 0,
    # would not be hidden by the new run's purge_step)
    data_dir = make_mnist(tmp_path / "mnist", n_train=260, n_test=40)
    data, out = load_dataset("mnist", data_dir, val_size=20), tmp_path / "r"
    stem = "mnist_mlp_emb_0"

    def go(seed: str, stop=None, replace=False):
        args = build_parser(RECIPES["mlp"]).parse_args(["--data", str(data_dir), "--val-size", "20", "--batch-size",
                                                        "20", "--epochs", "2", "--quiet", "--results-dir", str(out),
                                                        "--tensorboard", "--seed", seed])
        cfg = make_config(RECIPES["mlp"], args, 0)
        files = RunFiles(out, stem)
        files.dir.mkdir(exist_ok=True)
        if replace:
            files.replace_on_first_checkpoint(cfg.tensorboard)
        return run(cfg, data, torch.device("cpu"), files, stop=stop)

    earlier = go("1")
    log = out / f"{stem}_tensorboard"
    before = {p: p.read_bytes() for p in log.iterdir()}
    with pytest.raises(Interrupted):
        go("2", stop=StopAfter(8), replace=True)  # 12 steps per epoch: stopped inside the first
    assert {p: p.read_bytes() for p in log.iterdir()} == before
    acc = [e.value for e in _read(log).Scalars("accuracy/test")]
    assert acc == pytest.approx([row["test_acc"] for row in earlier["curve"]])
    new = go("3", replace=True)
    assert len(list(log.glob("events.out.tfevents.*"))) == 1  # the earlier run's file went at the checkpoint
    ea = _read(log)
    assert [e.step for e in ea.Scalars("accuracy/test")] == [row["step"] for row in new["curve"]]
    assert [e.value for e in ea.Scalars("accuracy/test")] == pytest.approx([row["test_acc"] for row in new["curve"]])
    assert [e.step for e in ea.Images("soft_targets")] == [12, 24]
    (final,) = ea.Scalars("hparam/test_error_pct")
    assert final.value == pytest.approx(new["reported"]["test_error_pct"])



def test_overwrite_from_the_command_line_replaces_the_log(tmp_path, capsys):
    data, out = make_mnist(tmp_path / "mnist", n_train=520), tmp_path / "r"
    flags = ["--data", str(data), "--val-size", "20", "--results-dir", str(out), "--dry-run", "--quiet",
             "--tensorboard"]
    log = out / "mnist_mlp_emb_0_tensorboard"
    assert run_script("mlp.py", *flags, capsys=capsys).returncode == 0
    (earlier,) = log.glob("events.out.tfevents.*")
    r = run_script("mlp.py", *flags, "--overwrite", "--seed", "5", capsys=capsys)
    assert r.returncode == 0, r.stderr
    (new,) = log.glob("events.out.tfevents.*")
    assert new != earlier

def test_a_held_log_writes_nothing_until_released_then_each_point_at_its_time(tmp_path):
    from labelemb.tblog import TensorBoardLog

    row = {"train_acc": 0.5, "train_loss": 1.0, "val_acc": None, "test_acc": 0.5}
    with TensorBoardLog(str(tmp_path / "tb"), purge_step=1, hold=True) as log:
        log.point({**row, "step": 1}, {"test": 1.0}, 1e-3)
        time.sleep(0.3)
        log.point({**row, "step": 2}, {"test": 1.0}, 1e-3)
        assert not (tmp_path / "tb").exists()
        released = time.time()
        log.release()
        log.point({**row, "step": 3}, {"test": 1.0}, 1e-3)  # after release: written at once
    t = [e.wall_time for e in _read(tmp_path / "tb").Scalars("accuracy/test")]
    assert [e.step for e in _read(tmp_path / "tb").Scalars("accuracy/test")] == [1, 2, 3]
    assert t[1] - t[0] >= 0.25 and t[1] <= released <= t[2]  # logged times, not the release's


def test_a_failing_log_warns_once_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    from labelemb.tblog import TensorBoardLog

    log = TensorBoardLog(str(tmp_path / "tb"), purge_step=1)
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(log.writer, "add_scalar", full_disk)
    row = {"step": 1, "train_acc": 0.5, "train_loss": 1.0, "val_acc": None, "test_acc": 0.5}
    log.point(row, {"test": 1.0}, 1e-3)
    log.point(row, {"test": 1.0}, 1e-3)  # no second try, no second warning
    log.soft_targets(torch.eye(3), 1)
    log.close()
    err = capsys.readouterr().err
    assert len(calls) == 1 and log.failed and err.count("warning: TensorBoard log") == 1
    assert "No space left on device" in err and "the run goes on" in err
