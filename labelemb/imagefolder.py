"""Your own images for the CIFAR recipes: ``--dataset imagefolder --data DIR``.

DIR holds ``train/`` and ``test/``, each with one sub-folder of images per class (torchvision's
ImageFolder convention; any format PIL reads). Classes are the sub-folder names, sorted; train
and test must have the same ones. Every image is decoded once with PIL, checked to be 32x32
(the recipe's size; ``resize=True`` scales them instead) and stored with the labels as a tensor
file beside the data, ``DIR/.labelemb_cache_<key>.pt``. The key is a hash of every image's path,
size and modification time (and of ``resize``): an unchanged folder loads from the cache, any
added, removed or modified image makes a new cache (the stale one is removed).

The dataset is then a CIFAR one: uint8 tensors, CIFAR-10 mean/std, pad-4 crop + flip.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

from .dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from .errors import DataError
from .fingerprints import data_source, sha256

SIZE = 32  # the CIFAR recipes' image size
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
CACHE_FORMAT = "labelemb-imagefolder/1"
_CACHE_NAME = re.compile(r"^\.labelemb_cache_(resize_)?[0-9a-f]{16}\.pt$")
SPLITS = ("train", "test")

# What the last loads did (tests read it): images decoded, loads served from the cache.
stats = {"decoded": 0, "cache_hits": 0}

_LAYOUT = ("--dataset imagefolder needs --data DIR holding train/ and test/, each with one sub-folder of images "
           "per class")


def _class_dirs(split_dir: Path) -> list[str]:
    try:
        return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:  # unreadable
        raise DataError(f"cannot list {split_dir} ({e.strerror or e}); make it readable") from None


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as e:  # a link to nothing, a file gone since the scan, no permission
        raise DataError(f"cannot read {path} ({e.strerror or e}); delete or replace it") from None


def _images(class_dir: Path) -> list[Path]:
    """The image files under a class folder (recursively, hidden files and folders skipped), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(EXTENSIONS)]
    return out


def _scan(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """Class names and, per split, the (image file, label) pairs; DataError for a wrong layout."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; {_LAYOUT}")
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder; {_LAYOUT}")
    train, test = (_class_dirs(root / s) for s in SPLITS)
    if not train:
        raise DataError(f"{root / 'train'} has no class sub-folders; put each class's images in "
                        f"{root / 'train'}/<class>/ (and its test images in {root / 'test'}/<class>/)")
    if train != test:
        only_train = ", ".join(sorted(set(train) - set(test))) or "none"
        only_test = ", ".join(sorted(set(test) - set(train))) or "none"
        raise DataError(f"{root}/train and {root}/test have different class folders (only in train: {only_train}; "
                        f"only in test: {only_test}); both need one sub-folder per class, with the same names")
    if len(train) < 2:
        raise DataError(f"{root}/train has one class folder ({train[0]}); a classifier needs at least 2 classes")
    files = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(train):
            imgs = _images(root / split / name)
            if not imgs:
                raise DataError(f"class folder {root / split / name} holds no images ({', '.join(EXTENSIONS)}); "
                                "add images or remove this class's folder from both train/ and test/")
            files[split] += [(p, label) for p in imgs]
    return train, files


def _cache_key(root: Path, classes: list[str], files: dict, resize: bool) -> str:
    listing = {split: [[str(p.relative_to(root)), label, st.st_size, st.st_mtime_ns]
                       for p, label in pairs for st in [_stat(p)]] for split, pairs in files.items()}
    blob = json.dumps([CACHE_FORMAT, SIZE, bool(resize), classes, listing], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _decode(path: Path, resize: bool) -> np.ndarray:
    """One image as uint8 3 x 32 x 32 (RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            size = im.size
            if size != (SIZE, SIZE) and not resize:
                bad = size
            else:
                bad = None
                im = im.convert("RGB")
                if size != (SIZE, SIZE):
                    im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:  # unreadable, truncated
        raise DataError(f"cannot read {path} as an image ({type(e).__name__}: {e}); delete or replace it") from None
    if bad is not None:
        raise DataError(f"{path} is {bad[0]}x{bad[1]} pixels, the recipe needs {SIZE}x{SIZE}; "
                        f"resize your images, or pass --resize to scale every image to {SIZE}x{SIZE} when loading")
    stats["decoded"] += 1
    return arr.transpose(2, 0, 1)


def _decode_split(pairs: list[tuple[Path, int]], resize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.empty((len(pairs), 3, SIZE, SIZE), np.uint8)
    for i, (p, _) in enumerate(pairs):
        x[i] = _decode(p, resize)
    return torch.from_numpy(x), torch.tensor([label for _, label in pairs], dtype=torch.int64)


def _read_cache(path: Path, key: str, classes: list[str], counts: dict[str, int]) -> dict | None:
    """The cached tensors if ``path`` is a whole cache of this key, else None (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        c = torch.load(path, map_location="cpu", weights_only=True)
        ok = (isinstance(c, dict) and c.get("format") == CACHE_FORMAT and c.get("key") == key
              and c.get("classes") == classes
              and all(c[f"{s}_x"].dtype == torch.uint8 and tuple(c[f"{s}_x"].shape) == (counts[s], 3, SIZE, SIZE)
                      and tuple(c[f"{s}_y"].shape) == (counts[s],) for s in SPLITS))
    except Exception:  # truncated or foreign file: decode again
        return None
    return c if ok else None


def _write_cache(root: Path, path: Path, content: dict) -> None:
    """Best effort: a read-only data folder just means decoding again next time."""
    import io

    from .results import atomic_write

    buf = io.BytesIO()
    torch.save(content, buf)
    try:
        atomic_write(path, buf.getvalue())
        resize_kind = _CACHE_NAME.match(path.name).group(1)
        for old in root.iterdir():  # caches of an earlier state of the folder
            m = _CACHE_NAME.match(old.name)
            if m and m.group(1) == resize_kind and old.name != path.name:
                old.unlink(missing_ok=True)
    except OSError as e:
        print(f"note: could not write the image cache {path} ({e.strerror or e}); the images will be "
              "decoded again next time", file=sys.stderr)


def load_imagefolder(root: str | os.PathLike, resize: bool = False) -> Dataset:
    """DIR/train and DIR/test as a CIFAR-recipe Dataset (see the module docstring)."""
    root = Path(root)
    classes, files = _scan(root)
    key = _cache_key(root, classes, files, resize)
    cache = root / f".labelemb_cache_{'resize_' if resize else ''}{key}.pt"
    c = _read_cache(cache, key, classes, {s: len(files[s]) for s in SPLITS})
    if c is not None:
        stats["cache_hits"] += 1
    else:
        c = {"format": CACHE_FORMAT, "key": key, "classes": classes}
        for s in SPLITS:
            c[f"{s}_x"], c[f"{s}_y"] = _decode_split(files[s], resize)
        _write_cache(root, cache, c)
    # the decoded images and labels themselves (the cache key reads only names, sizes and times)
    digests = {f"{s}_{part}": sha256(c[f"{s}_{part}"].numpy().tobytes()) for s in SPLITS for part in ("x", "y")}
    return Dataset("imagefolder", list(classes), train_x=c["train_x"], train_y=c["train_y"],
                   test_x=c["test_x"], test_y=c["test_y"], mean=CIFAR_MEAN, std=CIFAR_STD, augment=True,
                   source=data_source(root, digests, cache_key=key))
