"""Which data a run saw: the sha256 of every file it read, and the datasets we know by them.

A record's ``data`` is ``{"folder": ..., "sha256": {<file name without .gz>: <hex>}}``, the
digests taken over the uncompressed bytes (so a re-gzipped copy of the same data reads the same).
The report names the data of a group from :data:`KNOWN` and warns when the runs it pools saw
different data. No torch here: the report imports this without the training stack.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

# The official files, uncompressed. MNIST: the four files of ../shared/data/mnist (three are the
# original downloads byte for byte, their .gz md5s those torchvision lists; the training images
# rebuilt losslessly, uncompressed md5 6bbc9ace898e44ae57da46a324031adb, the original's).
# Fashion-MNIST: the files of Debian's dataset-fashion-mnist (the official release).
KNOWN = {
    "MNIST (the official files)": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "Fashion-MNIST (the official files)": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# The known files that a record's dataset name promises.
EXPECTED = {"mnist": "MNIST (the official files)", "fashion-mnist": "Fashion-MNIST (the official files)"}


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def data_source(folder: str | os.PathLike, digests: dict[str, str], **extra) -> dict:
    """A dataset's ``source``, a record's ``data``: the folder read and the sha256 of each file."""
    return {"folder": str(Path(folder).resolve()), "sha256": dict(sorted(digests.items())), **extra}


def file_key(name: str) -> str:
    """The key of a file in ``data["sha256"]``: its name without ``.gz``."""
    return name[:-3] if name.endswith(".gz") else name


def identify(digests: dict | None) -> str | None:
    """The name of the known dataset whose files these are, None if none."""
    if not isinstance(digests, dict):
        return None
    return next((name for name, known in KNOWN.items() if digests == known), None)


def describe(data: dict | None) -> str:
    """One phrase for a record's ``data``: the known dataset, or that it is not one we know."""
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), dict):
        return "not recorded (a record written before records carried a data fingerprint)"
    known = identify(data["sha256"])
    if known:
        return known
    return "not a dataset this suite knows by its sha256 (" + ", ".join(
        f"{k} {str(v)[:12]}" for k, v in sorted(data["sha256"].items())) + ")"
