"""pip install: the package, its commands and its requirements, used from another folder.

Built offline (--no-index --no-build-isolation: the setuptools of this environment, no download)
from a copy of the project's files, so the checkout gets no build/ folder, and installed with
--no-deps into a temporary folder: the dependencies are this environment's own.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

DIST_FILES = ("pyproject.toml", "README.md", "requirements.txt", "requirements-tensorboard.txt",
              "requirements-slurm.txt")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("install")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(ROOT / "labelemb", src / "labelemb", ignore=shutil.ignore_patterns("__pycache__"))
    for name in DIST_FILES:
        shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation",
                        "--no-compile", "--target", str(target), str(src)], capture_output=True, text=True,
                       timeout=600, cwd=tmp)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return target


def _env(target: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, PYTHONPATH=str(target), OMP_NUM_THREADS="1")


def test_imports_from_another_folder(installed, tmp_path):
    code = ("import labelemb, torch\n"
            "from labelemb import LabelEmbedding, LabelEmbLoss\n"
            "emb, loss = LabelEmbedding(8, 5), LabelEmbLoss()\n"
            "h, y = torch.randn(4, 8, requires_grad=True), torch.tensor([0, 1, 2, 3])\n"
            "o2, e = emb(h, y)\n"
            "loss(torch.randn(4, 5, requires_grad=True), y, o2, e).backward()\n"
            "print(labelemb.__file__, labelemb.__version__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(installed),
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    where, version = r.stdout.split()
    assert Path(where).is_relative_to(installed) and version == __import__("labelemb").__version__


def test_the_commands_are_declared_and_run(installed, tmp_path):
    (dist_info,) = installed.glob("labelemb-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()
    assert "labelemb-report = labelemb.report:main" in entry_points
    assert "labelemb-bench = labelemb.bench:main" in entry_points
    assert "labelemb-sweep = labelemb.sweep:main" in entry_points
    for command, words in (("labelemb-report", "Paper-style report"), ("labelemb-bench", "Time training steps"),
                           ("labelemb-sweep", "Run many runs of one task at once")):
        r = subprocess.run([str(installed / "bin" / command), "--help"], capture_output=True, text=True,
                           env=_env(installed), cwd=tmp_path, timeout=300)
        assert r.returncode == 0 and words in " ".join(r.stdout.split()), (command, r.stderr)
        assert r.stdout.startswith(f"usage: {command} ")  # named as the user called it


def test_requirements_come_from_the_requirements_files(installed):
    (dist_info,) = installed.glob("labelemb-*.dist-info")
    meta = (dist_info / "METADATA").read_text()
    runtime = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for req in runtime:
        assert f"Requires-Dist: {req}" in meta, req
    assert "Provides-Extra: tensorboard" in meta and 'tensorboard>=2.14; extra == "tensorboard"' in meta
    assert "Provides-Extra: slurm" in meta and 'submitit>=1.5; extra == "slurm"' in meta


def test_the_installed_sweep_trains_from_another_folder(installed, tmp_path):
    from conftest import make_mnist

    data = make_mnist(tmp_path / "m")
    r = subprocess.run([str(installed / "bin" / "labelemb-sweep"), "mlp", "--modes", "emb", "--runs", "1",
                        "--results-dir", "out", "--", "--data", str(data), "--val-size", "20", "--dry-run"],
                       capture_output=True, text=True, env=_env(installed), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "mnist_mlp_emb_0.json").read_text())["status"] == "complete"


def test_the_readme_example_runs_from_another_folder(installed, tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use the label embedding in your own code", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(installed),
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("torch.Size([10, 10])")
