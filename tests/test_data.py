"""Data loading through the real code path on tiny files in the real on-disk formats, the
TensorFlow MNIST split, and the CIFAR augmentation / normalisation of SPEC §2."""
from __future__ import annotations

import gzip
import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_idx
from labelemb.data import load_cifar, load_dataset, load_mnist
from labelemb.dataset import random_crop_flip
from labelemb.errors import DataError

SPEC_MEAN = (0.4914, 0.4822, 0.4465)
SPEC_STD = (0.2023, 0.1994, 0.2010)
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
IDX_NAMES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


# ----------------------------------------------------------------------------- helpers
def write_marked_mnist(folder: Path, n_train=120, n_test=40, gz=True):
    """Four IDX files where pixel (0, 0) of image i is i (unique) and label i is (7 i + 3) % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rng = np.random.default_rng(n)
        x = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        x[:, 0, 0] = np.arange(n) + (0 if split == "train" else 100)
        y = ((7 * np.arange(n) + 3) % 10).astype(np.uint8)
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
    ext = ".gz" if gz else ""
    for k, base in IDX_NAMES.items():
        write_idx(folder / f"{base}{ext}", arrays[k], gz)
    return arrays


def read_idx_gz_by_hand(path: Path, ndim: int) -> np.ndarray:
    raw = gzip.open(path, "rb").read()
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


# ----------------------------------------------------------------------------- MNIST
def test_mnist_shapes_dtypes_order_and_tf_split(tmp_path):
    arrays = write_marked_mnist(tmp_path / "m", n_train=120, n_test=40)
    ds = load_dataset("mnist", tmp_path / "m", val_size=20, download=False)
    assert ds.name == "mnist" and ds.classes == [str(i) for i in range(10)] and ds.num_classes == 10
    for k, shape in (("train_x", (100, 1, 28, 28)), ("val_x", (20, 1, 28, 28)), ("test_x", (40, 1, 28, 28))):
        t = getattr(ds, k)
        assert t.shape == shape and t.dtype == torch.uint8, k
    for k, n in (("train_y", 100), ("val_y", 20), ("test_y", 40)):
        t = getattr(ds, k)
        assert t.shape == (n,) and t.dtype == torch.int64, k
    # the first 20 training images are validation, the other 100 train, order kept
    assert ds.val_x[:, 0, 0, 0].tolist() == list(range(20))
    assert ds.train_x[:, 0, 0, 0].tolist() == list(range(20, 120))
    assert ds.test_x[:, 0, 0, 0].tolist() == list(range(100, 140))
    assert np.array_equal(ds.val_x[:, 0].numpy(), arrays["train_x"][:20])
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train_x"][20:])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays["test_x"])
    assert ds.val_y.tolist() == [(7 * i + 3) % 10 for i in range(20)]
    assert ds.train_y.tolist() == [(7 * i + 3) % 10 for i in range(20, 120)]
    assert ds.test_y.tolist() == [(7 * i + 3) % 10 for i in range(40)]
    # MNIST recipe: scale to [0, 1], no normalisation, no augmentation
    assert ds.mean is None and ds.std is None and ds.augment is False


def test_mnist_fixture_files_background_and_labels(mnist_dir):
    ds = load_mnist(mnist_dir, val_size=20, download=False)
    n = 120
    assert ds.val_x[:, 0, 0, 0].tolist() == [(i % 256) // 4 for i in range(20)]
    assert ds.train_x[:, 0, 0, 0].tolist() == [(i % 256) // 4 for i in range(20, n)]
    assert ds.test_x[:, 0, 0, 0].tolist() == [(i % 256) // 4 for i in range(40)]
    labels = read_idx_gz_by_hand(mnist_dir / "train-labels-idx1-ubyte.gz", 1).astype(np.int64)
    assert ds.val_y.tolist() == labels[:20].tolist() and ds.train_y.tolist() == labels[20:].tolist()
    test_labels = read_idx_gz_by_hand(mnist_dir / "t10k-labels-idx1-ubyte.gz", 1)
    assert ds.test_y.tolist() == test_labels.tolist()
    # the label's bright block sits in rows 2y..2y+3 of its own image: images and labels stay paired
    for x, y in zip(ds.train_x[:, 0], ds.train_y):
        assert (x[2 * y:2 * y + 4, 4:24] == 255).all()


def test_default_validation_size_is_the_tf_5000():
    assert inspect.signature(load_mnist).parameters["val_size"].default == 5000
    assert inspect.signature(load_dataset).parameters["val_size"].default == 5000


def test_val_size_zero_and_largest(tmp_path):
    write_marked_mnist(tmp_path / "m", n_train=30, n_test=5)
    ds = load_mnist(tmp_path / "m", val_size=0, download=False)
    assert ds.val_x is None and ds.val_y is None and len(ds.train_x) == 30
    ds = load_mnist(tmp_path / "m", val_size=29, download=False)
    assert len(ds.val_x) == 29 and ds.train_x[:, 0, 0, 0].tolist() == [29]


@pytest.mark.parametrize("val_size", [30, 31, 1000, -1])
def test_val_size_out_of_range_raises(tmp_path, val_size):
    write_marked_mnist(tmp_path / "m", n_train=30, n_test=5)
    with pytest.raises(DataError, match="val-size"):
        load_mnist(tmp_path / "m", val_size=val_size, download=False)


@pytest.mark.parametrize("layout", ["direct_gz", "torchvision_gz", "direct_raw", "torchvision_raw"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_layouts(tmp_path, layout, name):
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    folder = tmp_path / "data" / sub / "raw" if layout.startswith("torchvision") else tmp_path / "data"
    write_marked_mnist(folder, n_train=30, n_test=6, gz=layout.endswith("gz"))
    ds = load_dataset(name, tmp_path / "data", val_size=10, download=False)
    assert ds.name == name
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.val_x.shape == (10, 1, 28, 28)
    assert ds.test_x.shape == (6, 1, 28, 28)
    assert ds.train_x[:, 0, 0, 0].tolist() == list(range(10, 30))
    expected = FASHION_NAMES if name == "fashion-mnist" else [str(i) for i in range(10)]
    assert ds.classes == expected


def test_fashion_mnist_class_names(tmp_path):
    write_marked_mnist(tmp_path / "f", n_train=12, n_test=3)
    ds = load_dataset("fashion-mnist", tmp_path / "f", val_size=2, download=False)
    assert ds.classes == FASHION_NAMES and ds.num_classes == 10


# ----------------------------------------------------------------------------- CIFAR
def _cifar_reference(folder: Path, files, key):
    batches = [read_pickle(folder / f) for f in files]
    x = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(b[key], np.int64) for b in batches])
    return x, y


@pytest.mark.parametrize("where", ["torchvision", "folder"])
def test_cifar10(cifar10_dir, where):
    folder = cifar10_dir / "cifar-10-batches-py"
    ds = load_dataset("cifar10", cifar10_dir if where == "torchvision" else folder, download=False)
    assert ds.name == "cifar10" and ds.classes == [f"c{i}" for i in range(10)] and ds.num_classes == 10
    assert ds.train_x.shape == (150, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (40, 3, 32, 32) and ds.test_x.dtype == torch.uint8
    assert ds.train_y.shape == (150,) and ds.train_y.dtype == torch.int64
    assert ds.test_y.shape == (40,) and ds.test_y.dtype == torch.int64
    x, y = _cifar_reference(folder, [f"data_batch_{i}" for i in range(1, 6)], b"labels")
    assert np.array_equal(ds.train_x.numpy(), x) and np.array_equal(ds.train_y.numpy(), y)
    x, y = _cifar_reference(folder, ["test_batch"], b"labels")
    assert np.array_equal(ds.test_x.numpy(), x) and np.array_equal(ds.test_y.numpy(), y)
    # the row layout is channel-major: the first 1024 bytes are the red plane
    raw = read_pickle(folder / "data_batch_1")[b"data"][0]
    assert np.array_equal(ds.train_x[0, 0].numpy().ravel(), raw[:1024])
    assert np.array_equal(ds.train_x[0, 2].numpy().ravel(), raw[2048:])
    assert ds.val_x is None and ds.val_y is None
    assert ds.augment is True and ds.mean == SPEC_MEAN and ds.std == SPEC_STD


@pytest.mark.parametrize("where", ["torchvision", "folder"])
def test_cifar100_fine_labels_and_names(cifar100_dir, where):
    folder = cifar100_dir / "cifar-100-python"
    for f in ("train", "test"):  # add coarse labels that differ from the fine ones
        b = read_pickle(folder / f)
        b[b"coarse_labels"] = [(v + 1) % 20 for v in b[b"fine_labels"]]
        with open(folder / f, "wb") as fh:
            pickle.dump(b, fh)
    ds = load_cifar(cifar100_dir if where == "torchvision" else folder, "cifar100", download=False)
    assert ds.classes == [f"fine{i}" for i in range(100)] and ds.num_classes == 100
    assert ds.train_x.shape == (60, 3, 32, 32) and ds.test_x.shape == (40, 3, 32, 32)
    x, y = _cifar_reference(folder, ["train"], b"fine_labels")
    assert np.array_equal(ds.train_x.numpy(), x) and ds.train_y.tolist() == y.tolist()
    x, y = _cifar_reference(folder, ["test"], b"fine_labels")
    assert np.array_equal(ds.test_x.numpy(), x) and ds.test_y.tolist() == y.tolist()
    assert ds.train_y.dtype == torch.int64
    # CIFAR-100 is normalised with the CIFAR-10 statistics too (SPEC §2)
    assert ds.mean == SPEC_MEAN and ds.std == SPEC_STD and ds.augment is True


# ----------------------------------------------------------------------------- errors
def _gz_bytes(array: np.ndarray, magic_ndim=None) -> bytes:
    nd = array.ndim if magic_ndim is None else magic_ndim
    header = (0x800 + nd).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _assert_data_error_names(fn, path: Path):
    with pytest.raises(DataError) as exc:
        fn()
    msg = str(exc.value)
    assert str(path) in msg, msg
    assert "\n" not in msg
    return msg


def test_wrong_idx_magic(tmp_path):
    write_marked_mnist(tmp_path, n_train=10, n_test=4)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    write_idx(bad, np.zeros((10, 1, 1), np.uint8))  # an images file under the labels name
    msg = _assert_data_error_names(lambda: load_mnist(tmp_path, val_size=2, download=False), bad)
    assert "magic" in msg


def test_truncated_idx_body(tmp_path):
    write_marked_mnist(tmp_path, n_train=10, n_test=4)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    full = _gz_bytes(np.zeros((4, 28, 28), np.uint8))
    with gzip.open(bad, "wb") as f:
        f.write(full[:-100])  # valid gzip of an IDX file missing its last bytes
    msg = _assert_data_error_names(lambda: load_mnist(tmp_path, val_size=2, download=False), bad)
    assert "truncated" in msg


def test_truncated_idx_header_uncompressed(tmp_path):
    write_marked_mnist(tmp_path, n_train=10, n_test=4, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:10])
    _assert_data_error_names(lambda: load_mnist(tmp_path, val_size=2, download=False), bad)


def test_truncated_gzip(tmp_path):
    write_marked_mnist(tmp_path, n_train=50, n_test=4)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 2])
    _assert_data_error_names(lambda: load_mnist(tmp_path, val_size=2, download=False), bad)


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    write_marked_mnist(tmp_path, n_train=50, n_test=4)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(bad.read_bytes())
    for i in range(20, len(data) - 20, 7):  # scramble the compressed body, keep header and trailer
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError) as exc:
        load_mnist(tmp_path, val_size=2, download=False)
    assert str(bad) in str(exc.value)


def test_image_label_count_mismatch(tmp_path):
    write_marked_mnist(tmp_path, n_train=10, n_test=4)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(9, np.uint8))
    with pytest.raises(DataError, match="10 images.*9 labels"):
        load_mnist(tmp_path, val_size=2, download=False)


def test_labels_out_of_range(tmp_path):
    write_marked_mnist(tmp_path, n_train=10, n_test=4)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 10, 2], np.uint8))
    with pytest.raises(DataError, match="0..9"):
        load_mnist(tmp_path, val_size=2, download=False)


def test_wrong_pickle_keys(cifar10_dir):
    bad = cifar10_dir / "cifar-10-batches-py" / "data_batch_3"
    b = read_pickle(bad)
    b[b"fine_labels"] = b.pop(b"labels")  # a CIFAR-100 style batch in a CIFAR-10 folder
    with open(bad, "wb") as f:
        pickle.dump(b, f)
    msg = _assert_data_error_names(lambda: load_cifar(cifar10_dir, "cifar10", download=False), bad)
    assert "labels" in msg


def test_truncated_pickle(cifar100_dir):
    bad = cifar100_dir / "cifar-100-python" / "test"
    data = bad.read_bytes()
    bad.write_bytes(data[:len(data) // 3])
    _assert_data_error_names(lambda: load_cifar(cifar100_dir, "cifar100", download=False), bad)


def test_pickle_of_wrong_type(cifar10_dir):
    bad = cifar10_dir / "cifar-10-batches-py" / "test_batch"
    with open(bad, "wb") as f:
        pickle.dump([1, 2, 3], f)
    _assert_data_error_names(lambda: load_cifar(cifar10_dir, "cifar10", download=False), bad)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_missing_dataset_without_download(tmp_path, name):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    msg = _assert_data_error_names(lambda: load_dataset(name, empty, download=False), empty)
    assert name in msg
    assert list(empty.iterdir()) == []  # nothing was created


def test_incomplete_cifar_folder_is_missing(cifar10_dir):
    (cifar10_dir / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError, match="data_batch_5"):
        load_cifar(cifar10_dir, "cifar10", download=False)


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="svhn"):
        load_dataset("svhn", tmp_path, download=False)


# ----------------------------------------------------------------------------- augmentation
def ref_crop(padded_img: np.ndarray, dy: int, dx: int, flip: bool) -> np.ndarray:
    """The per-sample reference: a 32x32 window of the padded C x 40 x 40 image, flipped left-right."""
    win = padded_img[:, dy:dy + 32, dx:dx + 32]
    return win[:, :, ::-1] if flip else win


def find_windows(padded_img: np.ndarray, crop: np.ndarray):
    """Every (dy, dx, flip) whose reference crop equals ``crop``."""
    return [(dy, dx, fl) for dy in range(9) for dx in range(9) for fl in (False, True)
            if np.array_equal(ref_crop(padded_img, dy, dx, fl), crop)]


@pytest.fixture
def cifar(cifar10_dir):
    return load_dataset("cifar10", cifar10_dir, download=False)


def test_random_crop_flip_matches_reference(cifar):
    padded = torch.nn.functional.pad(cifar.train_x, (4, 4, 4, 4))
    assert padded.shape == (150, 3, 40, 40)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 150, (200,), generator=g)
    out = random_crop_flip(padded, idx, 4, torch.Generator().manual_seed(1))
    assert out.shape == (200, 3, 32, 32) and out.dtype == torch.uint8
    padded_np, out_np = padded.numpy(), out.numpy()
    seen = []
    for i, j in enumerate(idx.tolist()):
        found = find_windows(padded_np[j], out_np[i])
        assert len(found) == 1, f"sample {i}: crop is not a (unique) window of padded image {j}: {found}"
        seen.append(found[0])
    # uniform offsets 0..8 in each direction, and both flips, all occur
    assert {s[0] for s in seen} == set(range(9)) and {s[1] for s in seen} == set(range(9))
    flips = sum(s[2] for s in seen)
    assert 60 < flips < 140


def test_random_crop_flip_is_random_and_seedable(cifar):
    padded = torch.nn.functional.pad(cifar.train_x, (4, 4, 4, 4))
    idx = torch.arange(16)
    a = random_crop_flip(padded, idx, 4, torch.Generator().manual_seed(5))
    b = random_crop_flip(padded, idx, 4, torch.Generator().manual_seed(5))
    c = random_crop_flip(padded, idx, 4, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    d1, d2 = random_crop_flip(padded, idx, 4, g), random_crop_flip(padded, idx, 4, g)
    assert not torch.equal(d1, d2)  # a generator advances: successive batches differ
    assert random_crop_flip(padded, idx, 4, None).shape == (16, 3, 32, 32)  # global RNG works too


def test_train_batch_augmented_and_normalised(cifar):
    idx = torch.tensor([3, 0, 149, 77, 3, 3, 50, 120])
    x, y = cifar.train_batch(idx, torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, cifar.train_y[idx])
    x2, _ = cifar.train_batch(idx, torch.Generator().manual_seed(0))
    x3, _ = cifar.train_batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    # undo the SPEC normalisation and find each crop among the windows of the zero-padded image
    mean = np.array(SPEC_MEAN, np.float32)[:, None, None]
    std = np.array(SPEC_STD, np.float32)[:, None, None]
    padded = np.pad(cifar.train_x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i, j in enumerate(idx.tolist()):
        raw = np.rint((x[i].numpy() * std + mean) * 255)
        assert np.abs((x[i].numpy() * std + mean) * 255 - raw).max() < 1e-3
        found = find_windows(padded[j], raw.astype(np.uint8))
        assert len(found) == 1, i
        expect = (ref_crop(padded[j], *found[0]).astype(np.float32) / 255 - mean) / std
        np.testing.assert_allclose(x[i].numpy(), expect, rtol=1e-5, atol=1e-5)


def test_padding_is_black_before_normalisation(cifar):
    cifar.train_x = torch.full_like(cifar.train_x, 255)  # white images: only the padding is dark
    cifar.to("cpu")  # drops any cached padded copy
    x, _ = cifar.train_batch(torch.arange(150), torch.Generator().manual_seed(0))
    black = ((0.0 - torch.tensor(SPEC_MEAN)) / torch.tensor(SPEC_STD)).view(1, 3, 1, 1)
    white = ((1.0 - torch.tensor(SPEC_MEAN)) / torch.tensor(SPEC_STD)).view(1, 3, 1, 1)
    is_black = torch.isclose(x, black.expand_as(x), atol=1e-5)
    is_white = torch.isclose(x, white.expand_as(x), atol=1e-5)
    assert (is_black | is_white).all()
    assert is_black.any() and is_white.any()
    # a crop's black pixels are whole rows/columns at its border (zero padding), the same in all channels
    assert torch.equal(is_black[:, 0], is_black[:, 1]) and torch.equal(is_black[:, 0], is_black[:, 2])
    assert not is_black[:, :, 4:28, 4:28].any()  # the centre always comes from the image


def test_normalise_uses_spec_statistics(cifar):
    x = cifar.normalise(cifar.test_x[:5])
    expect = (cifar.test_x[:5].double() / 255 - torch.tensor(SPEC_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) \
        / torch.tensor(SPEC_STD, dtype=torch.float64).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.double(), expect, rtol=1e-5, atol=1e-5)
    assert cifar.test_x.dtype == torch.uint8  # the stored data is untouched
    # images stored as float (a reader of one's own): a batch is a view of them, and stays as it was
    floats = cifar.test_x.float()
    stored = floats.clone()
    torch.testing.assert_close(cifar.normalise(floats[:5]), x)
    assert torch.equal(floats, stored)


def test_mnist_train_batch_is_scaled_not_augmented(mnist_dir):
    ds = load_mnist(mnist_dir, val_size=20, download=False)
    idx = torch.tensor([0, 5, 99])
    x, y = ds.train_batch(idx, torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, ds.train_x[idx].float() / 255)
    assert torch.equal(y, ds.train_y[idx])
    assert 0 <= x.min() and x.max() <= 1


def test_dataset_to_cpu(cifar):
    x0, _ = cifar.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    before = {k: getattr(cifar, k).clone() for k in ("train_x", "train_y", "test_x", "test_y")}
    out = cifar.to(torch.device("cpu"))
    assert out is cifar
    for k, v in before.items():
        t = getattr(cifar, k)
        assert t.device.type == "cpu" and t.dtype == v.dtype and torch.equal(t, v)
    assert cifar.val_x is None
    x1, _ = cifar.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert torch.equal(x0, x1)


def test_mnist_dataset_to_cpu_keeps_validation(tmp_path):
    write_marked_mnist(tmp_path / "m", n_train=20, n_test=4)
    ds = load_mnist(tmp_path / "m", val_size=5, download=False).to("cpu")
    assert ds.val_x.device.type == "cpu" and ds.val_x[:, 0, 0, 0].tolist() == list(range(5))
    assert ds.val_y.dtype == torch.int64
