"""Dataset readers: the real on-disk formats into a :class:`~labelemb.dataset.Dataset`.

MNIST-style IDX (gzipped or not), the CIFAR python pickle batches, your own image folders
(:mod:`labelemb.imagefolder`); torchvision download as a fallback where a network exists; the
TensorFlow MNIST split (the first 5,000 training images are validation).
"""
from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from .errors import DataError, DatasetMissing
from .fingerprints import data_source, file_key, sha256
from .imagefolder import load_imagefolder

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Where this project's machines keep the real MNIST, beside the checkout (SPEC §4): named in the
# offline hint, never read unless passed as --data.
PROJECT_MNIST = "../shared/data/mnist"

# dataset name -> torchvision class name (also its folder name under root)
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
DATASETS = tuple(_TORCHVISION)


# ---------------------------------------------------------------------------------- IDX
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes, 1-d labels / 3-d images


def read_raw(path: Path) -> bytes:
    """A file's bytes, uncompressed if its name ends in .gz."""
    try:
        return gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read {path}: {e}; delete it and download the dataset again") from None


def parse_idx(raw: bytes, path: Path, ndim: int) -> np.ndarray:
    """The array in ``raw``, the bytes of the IDX file ``path`` (named in errors)."""
    expected = _IDX_MAGIC[ndim]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, shorter than an IDX header); "
                        "delete it and download the dataset again")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected:
        raise DataError(f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected:08x} "
                        f"({'labels' if ndim == 1 else 'images'} of unsigned bytes); is it the right file?")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path} holds {len(body)} data bytes but its header says {dims} = "
                        f"{int(np.prod(dims))}; the file is truncated or corrupt, download it again")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


_IDX_FILES = {"train_x": ("train-images-idx3-ubyte", 3), "train_y": ("train-labels-idx1-ubyte", 1),
              "test_x": ("t10k-images-idx3-ubyte", 3), "test_y": ("t10k-labels-idx1-ubyte", 1)}


def has_idx_files(root: str | os.PathLike, name: str) -> bool:
    """Whether ``root`` holds the four IDX files of ``name`` (in the folder or torchvision's layout)."""
    return _find_idx_dir(Path(root), name) is not None


def _find_idx_dir(root: Path, name: str) -> Path | None:
    """A folder holding the four IDX files: root itself (TF's MNIST_data/ convention, Debian's
    fashion-mnist) or torchvision's root/<MNIST|FashionMNIST>/raw."""
    for d in (root, root / _TORCHVISION[name] / "raw"):
        if all(_idx_path(d, base) is not None for base, _ in _IDX_FILES.values()):
            return d
    return None


def _idx_path(d: Path, base: str) -> Path | None:
    for p in (d / f"{base}.gz", d / base):
        if p.is_file():
            return p
    return None


def load_mnist(root: str | os.PathLike, name: str = "mnist", val_size: int = 5000,
               download: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST with TensorFlow's split: the first ``val_size`` training images
    are validation, the rest train; the test file is the test set."""
    root = Path(root)
    d = _find_idx_dir(root, name)
    if d is None:
        why = _missing(name, root, [root, root / _TORCHVISION[name] / "raw"],
                       [f"{base}(.gz)" for base, _ in _IDX_FILES.values()],
                       lambda folder, f: _idx_path(folder, f.removesuffix("(.gz)")) is not None)
        d = _download(root, name, why, lambda: _find_idx_dir(root, name)) if download else None
        if d is None:
            raise DatasetMissing(f"{why}; pass --data FOLDER holding them")
    arrays, digests = {}, {}
    for k, (base, ndim) in _IDX_FILES.items():
        path = _idx_path(d, base)
        raw = read_raw(path)
        arrays[k], digests[file_key(path.name)] = parse_idx(raw, path, ndim), sha256(raw)
    for split in ("train", "test"):
        nx, ny = len(arrays[f"{split}_x"]), len(arrays[f"{split}_y"])
        if nx != ny:
            raise DataError(f"{d}: the {split} images file holds {nx} images but the labels file {ny} labels")
    for k in ("train_y", "test_y"):
        if arrays[k].size and arrays[k].max() > 9:
            raise DataError(f"{d}: {k.replace('_y', '')} labels go up to {arrays[k].max()}, expected 0..9")
    n = len(arrays["train_x"])
    if not 0 <= val_size < n:
        raise DataError(f"--val-size {val_size} leaves no training images ({n} in {d}); "
                        f"use a value in 0..{n - 1}")
    x = torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1)
    y = torch.from_numpy(arrays["train_y"].astype(np.int64))
    classes = FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return Dataset(name, list(classes), train_x=x[val_size:], train_y=y[val_size:],
                   val_x=x[:val_size] if val_size else None, val_y=y[:val_size] if val_size else None,
                   test_x=torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
                   test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
                   source=data_source(d, digests))



# ---------------------------------------------------------------------------------- CIFAR
_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", labels="labels", names="label_names", n=10),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     labels="fine_labels", names="fine_label_names", n=100),
}


def _find_cifar_dir(root: Path, name: str) -> Path | None:
    spec = _CIFAR[name]
    for d in (root / spec["folder"], root):
        if all((d / f).is_file() for f in spec["train"] + spec["test"]):
            return d
    return None


def _unpickle(path: Path, digests: dict[str, str]) -> dict:
    """The dict pickled in ``path``, with str keys; its sha256 goes into ``digests``.

    Both forms of the batches load: the original Python 2 pickles (read with latin1, as torchvision
    does, so their numpy arrays load) and copies re-saved under Python 3, with str or bytes keys.
    """
    try:
        raw = path.read_bytes()
        obj = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # truncated or not a pickle at all: any unpickling error
        raise DataError(f"cannot read {path} as a CIFAR python batch ({type(e).__name__}: {e}); "
                        "delete it and download the dataset again") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR python batch (holds a {type(obj).__name__}, expected a dict)")
    digests[path.name] = sha256(raw)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, n_classes: int,
                 digests: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path, digests)
    missing = [k for k in ("data", label_key) if k not in obj]
    if missing:
        raise DataError(f"{path} lacks the key(s) {', '.join(missing)} of a CIFAR batch "
                        f"(has {', '.join(sorted(map(str, obj)))}); is it the right dataset?")
    data, labels = np.asarray(obj["data"]), np.asarray(obj[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, "
                        f"got {data.dtype} {data.shape} and {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path}: labels outside 0..{n_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root: str | os.PathLike, name: str = "cifar10", download: bool = True) -> Dataset:
    """CIFAR-10/100 from the python pickle batches (torchvision's layout or the folder itself)."""
    root, spec = Path(root), _CIFAR[name]
    d = _find_cifar_dir(root, name)
    if d is None:
        why = _missing(name, root, [root / spec["folder"], root], spec["train"] + spec["test"],
                       lambda folder, f: (folder / f).is_file())
        d = _download(root, name, why, lambda: _find_cifar_dir(root, name)) if download else None
        if d is None:
            raise DatasetMissing(f"{why}; pass --data FOLDER holding them")
    digests = {}
    parts = {s: [_cifar_batch(d / f, spec["labels"], spec["n"], digests) for f in spec[s]] for s in ("train", "test")}
    meta = d / spec["meta"]
    if meta.is_file():
        names = _unpickle(meta, digests).get(spec["names"])
        if names is None or len(names) != spec["n"]:
            raise DataError(f"{meta}: expected {spec['n']} class names under key {spec['names']}")
        classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    else:
        classes = [str(i) for i in range(spec["n"])]

    def cat(s: str, i: int) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([p[i] for p in parts[s]]))

    return Dataset(name, classes, train_x=cat("train", 0), train_y=cat("train", 1),
                   test_x=cat("test", 0), test_y=cat("test", 1), mean=CIFAR_MEAN, std=CIFAR_STD, augment=True,
                   source=data_source(d, digests))


# ---------------------------------------------------------------------------------- common
def _missing(name: str, root: Path, folders: list[Path], files: list[str], present) -> str:
    """The message for a dataset not found: where the most of its files are, which are missing there."""
    found = {d: [f for f in files if d.is_dir() and present(d, f)] for d in folders}
    best = max(folders, key=lambda d: len(found[d]))
    if not found[best]:
        return (f"{name} not found in {root} (looked for {', '.join(files)} there"
                + "".join(f" and in {d}" for d in folders if d != root) + ")")
    lacking = [f for f in files if f not in found[best]]
    return (f"{name} in {best} is incomplete: {', '.join(lacking)} missing ({len(found[best])} of its {len(files)} "
            "files are there)")



def _download(root: Path, name: str, why: str, find) -> Path:
    """Fetch with torchvision (needs a network) and return ``find()``'s folder; a failure becomes one
    DatasetMissing saying ``why`` the data was fetched, and leaves no folder it made behind."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name])
    before = _folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
        d = find()
        if d is None:
            raise RuntimeError("the download did not give the expected files")
        return d
    except Exception as e:
        for folder in sorted(_folders(root) - before, key=lambda p: len(p.parts), reverse=True):
            if not any(p.is_file() for p in folder.rglob("*")):  # made by this attempt and still empty
                shutil.rmtree(folder, ignore_errors=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetMissing(f"{why}, and downloading it failed ({first}); on a machine without network, copy the "
                             "dataset there or pass --data FOLDER holding it") from None


def _folders(root: Path) -> set[Path]:
    """``root`` and the folders under it (none if it does not exist)."""
    if not root.is_dir():
        return set()
    return {root, *(p for p in root.rglob("*") if p.is_dir())}


def default_data_dir(name: str) -> str | None:
    """./data, except Fashion-MNIST where the Debian package has installed it; None for
    ``imagefolder`` (your own images have no default place)."""
    if name == "imagefolder":
        return None
    if name == "fashion-mnist" and SYSTEM_FASHION_MNIST.is_dir():
        return str(SYSTEM_FASHION_MNIST)
    return "./data"


def load_dataset(name: str, root: str | os.PathLike, val_size: int = 5000, download: bool = True,
                 resize: bool = False) -> Dataset:
    """``resize`` applies to ``imagefolder`` only (scale every image to 32x32 when decoding)."""
    if Path(root).exists() and not Path(root).is_dir():
        raise DataError(f"--data {root} is a file, not a folder; pass the folder that holds the dataset")
    if name in ("mnist", "fashion-mnist"):
        return load_mnist(root, name, val_size=val_size, download=download)
    if name in _CIFAR:
        return load_cifar(root, name, download=download)
    if name == "imagefolder":
        return load_imagefolder(root, resize=resize)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, imagefolder")
