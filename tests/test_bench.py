"""The benchmark (python3 -m labelemb.bench) in --quick mode: valid JSON with every field.

One run of the real command for the MLP, the CNN and the CIFAR-10 ResNet-8 (quick mode: a
small batch for the conv nets) on CPU, and on CUDA where a GPU is (marked ``cuda``); the tests check field names, types, positive times and that every ratio
is the ratio of the times it is made of. The timings themselves are not checked (they depend
on the machine and its load).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import DEVICES, ROOT
from labelemb import bench

QUICK_TASKS = ("mlp", "cnn", "cifar10")
# Forward FLOPs per sample from the layer shapes (SPEC §2), written out:
MLP_FLOPS = 2 * (784 * 500 + 500 * 500 + 500 * 10)  # fc1, fc2, head 1
CNN_FLOPS = (2 * 5 * 5 * 1 * 32 * 28 * 28  # conv1, 'same', 28x28 out
             + 2 * 5 * 5 * 32 * 64 * 14 * 14  # conv2 after the first 2x2 pool
             + 2 * 3136 * 1024 + 2 * 1024 * 10)  # fc, head 1
HEAD2 = {"mlp": 2 * 500 * 10, "cnn": 2 * 1024 * 10}


@pytest.fixture(scope="module", params=DEVICES)
def result(request, tmp_path_factory):
    device = request.param
    cwd = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "labelemb.bench", "--quick", "--device", device, "--threads", "1",
                        "--task", ",".join(QUICK_TASKS)], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = cwd / f"bench_{device}.json"  # the default output file
    assert out.is_file() and f"written {out.name}" in p.stdout
    return json.loads(out.read_text()), p.stdout


def _pos(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def _close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-9)


def test_header_config_env_and_matmul(result):
    r, stdout = result
    assert r["format"] == "labelemb-bench/2"
    assert isinstance(r["created"], str) and r["command"][:3] == ["python3", "-m", "labelemb.bench"]
    cfg = r["config"]
    assert cfg["tasks"] == list(QUICK_TASKS) and cfg["quick"] is True and cfg["mode"] == "both"
    assert cfg["amp"] is False and cfg["channels_last"] is False and cfg["compile"] is False
    env = r["env"]
    for k in ("python", "torch", "torchvision", "device", "device_name", "threads", "cpu_count"):
        assert k in env, k
    assert env["device"].startswith(cfg["device"]) and env["threads"] == 1 and env["precision"] == "fp32"
    mm = r["matmul"]
    assert mm["n"] == 2048 and mm["dtype"] == "float32" and isinstance(mm["reps_per_window"], int)
    assert mm["precision"] == "fp32" and _pos(mm["seconds_per_matmul"]) and _pos(mm["flops_per_s"])
    assert _close(mm["flops_per_s"], 2 * 2048 ** 3 / mm["seconds_per_matmul"])
    assert all(_pos(s) for s in mm["windows_seconds"])
    # the table names every task and mode
    for t in QUICK_TASKS:
        assert t in stdout
    assert "ours/bare" in stdout


@pytest.mark.parametrize("task", QUICK_TASKS)
def test_task_fields_and_ratios(result, task):
    r, _ = result
    t = r["tasks"][task]
    spec = bench.TASKS[task]
    assert t["arch"] == spec.arch and t["input_shape"] == list(spec.shape) and t["num_classes"] == spec.num_classes
    assert t["batch_size"] == (spec.batch_size if spec.arch == "mlp" else bench.QUICK["conv_batch"])
    for k in ("n_train", "steps", "warmup", "repeats"):
        assert isinstance(t[k], int) and t[k] >= (0 if k == "warmup" else 1), k
    assert set(t["modes"]) == {"baseline", "emb"}
    bs = t["batch_size"]
    for mode, m in t["modes"].items():
        for k in ("ms_per_step", "images_per_s", "data_ms_per_step", "data_share", "flops_per_s",
                  "fraction_of_matmul", "ours_over_classic"):
            assert _pos(m[k]), (mode, k, m[k])
        assert len(m["windows_ms_per_step"]) == t["repeats"] and all(_pos(v) for v in m["windows_ms_per_step"])
        assert _close(m["images_per_s"], 1000 * bs / m["ms_per_step"])
        assert _close(m["data_share"], m["data_ms_per_step"] / m["ms_per_step"])
        assert isinstance(m["forward_flops_per_sample"], int) and isinstance(m["train_flops_per_step"], int)
        assert m["train_flops_per_step"] == 3 * m["forward_flops_per_sample"] * bs
        assert _close(m["flops_per_s"], m["train_flops_per_step"] / (m["ms_per_step"] / 1000))
        assert _close(m["fraction_of_matmul"], m["flops_per_s"] / r["matmul"]["flops_per_s"])
        c = m["classic"]
        for k in ("ms_per_step", "images_per_s", "data_ms_per_step", "data_share"):
            assert _pos(c[k]), (mode, "classic", k)
        assert _close(c["images_per_s"], 1000 * bs / c["ms_per_step"])
        assert _close(c["data_share"], c["data_ms_per_step"] / c["ms_per_step"])
        assert _close(m["ours_over_classic"], m["ms_per_step"] / c["ms_per_step"])
        if spec.cifar:
            assert "RandomCrop(32, padding=4)" in c["pipeline"] and "num_workers=2" in c["pipeline"]
            assert "tensor_loader" not in m
        else:
            assert "datasets.MNIST" in c["pipeline"] and "ToTensor" in c["pipeline"]
            tl = m["tensor_loader"]
            assert "TensorDataset" in tl["pipeline"]
            for k in ("ms_per_step", "images_per_s", "data_ms_per_step", "data_share"):
                assert _pos(tl[k]), (mode, "tensor_loader", k)
            assert _close(m["ours_over_tensor_loader"], m["ms_per_step"] / tl["ms_per_step"])
    assert _close(t["emb_over_baseline"], t["modes"]["emb"]["ms_per_step"] / t["modes"]["baseline"]["ms_per_step"])
    if task in HEAD2:
        base = MLP_FLOPS if task == "mlp" else CNN_FLOPS
        assert t["modes"]["baseline"]["forward_flops_per_sample"] == base
        assert t["modes"]["emb"]["forward_flops_per_sample"] == base + HEAD2[task]


def test_mlp_epoch_comparison(result):
    r, _ = result
    ep = r["mlp_epoch"]
    assert "train.run" in ep["method"] and ep["steps"] == bench.QUICK["epoch_steps"] and ep["batch_size"] == 100
    for mode in ("baseline", "emb"):
        m = ep["modes"][mode]
        assert _pos(m["ours_seconds"]) and _pos(m["bare_seconds"])
        assert _close(m["ours_over_bare"], m["ours_seconds"] / m["bare_seconds"])
    assert _close(ep["emb_over_baseline"], ep["modes"]["emb"]["ours_seconds"] / ep["modes"]["baseline"]["ours_seconds"])


def test_mlp_emb_overhead_adds_up(result):
    r, stdout = result
    ov = r["mlp_emb_overhead"]
    assert ov["calls"] == bench.QUICK["steps"] and ov["windows"] == 1 and ov["batch_size"] == 100
    assert "fp32 eager" in ov["note"]
    for k in ("step_ms", "loss_fwd_bwd_ms", "optimizer_step_ms"):
        assert set(ov[k]) == {"baseline", "emb"} and all(_pos(v) for v in ov[k].values()), k
    assert ov["step_ms"]["emb"] == r["tasks"]["mlp"]["modes"]["emb"]["ms_per_step"]
    assert _close(ov["step_extra_ms"], ov["step_ms"]["emb"] - ov["step_ms"]["baseline"])
    assert _close(ov["loss_extra_ms"], ov["loss_fwd_bwd_ms"]["emb"] - ov["loss_fwd_bwd_ms"]["baseline"])
    assert math.isclose(ov["loss_extra_ms"] + ov["optimizer_extra_ms"] + ov["other_extra_ms"], ov["step_extra_ms"],
                        rel_tol=1e-9, abs_tol=1e-12)
    assert "mlp emb extra per step" in stdout


def test_forward_flops_count_layer_shapes():
    # the counting itself, on the two models whose FLOP/s the issue asks for (no timing needed)
    assert bench.forward_flops("mlp", bench.TASKS["mlp"], emb=False) == MLP_FLOPS
    assert bench.forward_flops("mlp", bench.TASKS["mlp"], emb=True) == MLP_FLOPS + HEAD2["mlp"]
    assert bench.forward_flops("cnn", bench.TASKS["cnn"], emb=False) == CNN_FLOPS
    assert bench.forward_flops("cnn", bench.TASKS["cnn"], emb=True) == CNN_FLOPS + HEAD2["cnn"]


@pytest.mark.parametrize("argv,msg", [(["--task", "mnist"], "unknown task"), (["--steps", "0"], "--steps"),
                                      (["--warmup", "-1"], "--warmup"), (["--mode", "fast"], "invalid choice")])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, msg):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1


def test_the_folder_of_out_is_made_before_anything_is_timed(tmp_path, monkeypatch):
    class Timing(Exception):
        pass

    def timing(*a, **k):
        raise Timing

    monkeypatch.setattr(bench, "matmul_flops", timing)  # the first thing timed
    with pytest.raises(Timing):
        bench.main(["--device", "cpu", "--task", "mlp", "--out", str(tmp_path / "new" / "deeper" / "b.json")])
    assert (tmp_path / "new" / "deeper").is_dir()


def test_help_shows_defaults():
    h = bench.build_parser().format_help()
    for s in ("(default: all)", "(default: both)", "(default: auto)", "bench_<device>.json", "--quick", "--amp",
              "--channels-last", "--compile"):
        assert s in h, s


@pytest.mark.parametrize("task,kind", [("mlp", "pil"), ("mlp", "tensors"), ("cifar10", "pil")])
def test_classic_feeds_give_the_same_pixels_as_ours(task, kind):
    # the comparison is fair only if both feeds hand the model the same images (CIFAR: before
    # the random crop/flip, i.e. the feed's own ToTensor + Normalize against our normalisation)
    spec = bench.TASKS[task]
    data = bench.synthetic_dataset("x", spec, 6, seed=3)
    feed = bench.ClassicFeed(data, spec, 2, torch.device("cpu"), channels_last=False, kind=kind)
    ds = feed.loader.dataset
    if spec.cifar:
        assert [type(t).__name__ for t in ds.transform.transforms] == [
            "RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
        ds.transform.transforms = ds.transform.transforms[2:]  # the deterministic part
    for i in (0, 5):
        x, y = ds[i]
        assert x.shape == spec.shape and int(y) == int(data.train_y[i])
        torch.testing.assert_close(x, data.prepare(data.train_x[i:i + 1])[0], rtol=1e-5, atol=1e-6)


def test_classic_feed_rejects_unknown_kinds():
    data = bench.synthetic_dataset("x", bench.TASKS["cifar10"], 4, seed=0)
    for task, kind in (("mlp", "tensor"), ("cifar10", "tensors")):
        with pytest.raises(ValueError, match="kind must be"):
            bench.ClassicFeed(data, bench.TASKS[task], 2, torch.device("cpu"), channels_last=False, kind=kind)


def test_step_grads_make_adam_skip_head2_and_E_in_baseline():
    # emb_overhead times the optimiser step of each mode by leaving head 2's and E's gradients
    # None in baseline, as zero_grad(set_to_none=True) leaves them in a real baseline step
    from labelemb.models import build_model
    from labelemb.train import make_optimizer

    model = build_model("mlp", 10, 1, 28)
    opt = make_optimizer(model, lr=1e-3)
    n_all, n_extra = len(list(model.parameters())), len(list(model.emb.parameters()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bench.set_step_grads(model, emb=False)
    opt.step()
    assert len(opt.state) == n_all - n_extra
    assert all(id(p) not in {id(q) for q in opt.state} for p in model.emb.parameters())
    bench.set_step_grads(model, emb=True)
    opt.step()
    assert len(opt.state) == n_all
    # zero gradients: Adam's first steps leave the weights where they were
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
