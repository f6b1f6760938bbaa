"""A dataset as uint8 tensors on the training device, batched and augmented there.

CIFAR augmentation (zero-pad 4, random 32x32 crop, random horizontal flip) is done for a whole
batch in one gather; normalisation happens per batch on the device. The readers that fill a
:class:`Dataset` are in :mod:`labelemb.data` and :mod:`labelemb.imagefolder`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 statistics, used for CIFAR-100 too (SPEC §2)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


@dataclass
class Dataset:
    """Images as uint8 N x C x H x W and int64 labels, one tensor each, plus class names."""

    name: str
    classes: list[str]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    mean: tuple[float, ...] | None = None  # per-channel normalisation, None = just scale to [0, 1]
    std: tuple[float, ...] | None = None
    augment: bool = False  # pad-4 random crop + horizontal flip on training batches
    channels_last: bool = False  # hand batches to the model in channels-last memory format (--channels-last)
    # which files these are: {"folder": ..., "sha256": {file: hex}} (labelemb.fingerprints); None if not read from files
    source: dict | None = None
    _padded: torch.Tensor | None = field(default=None, repr=False)
    _mean_std: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_channels_last(self) -> "Dataset":
        """The same tensors, handed to the model in channels-last memory format (--channels-last)."""
        return replace(self, channels_last=True)

    def to(self, device: torch.device) -> "Dataset":
        for k in ("train_x", "train_y", "test_x", "test_y", "val_x", "val_y"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, v.to(device))
        self._padded = None
        return self

    # ------------------------------------------------------------------ batches
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 1], then (x - mean) / std where the recipe normalises."""
        x = x.to(torch.float32, copy=True).div_(255)  # a copy whatever the dtype: the in-place ops must not
        # reach the stored images (a float view of them would be divided at every evaluation)
        if self.mean is not None:
            if self._mean_std is None or self._mean_std[0].device != x.device:  # made once, not per batch
                self._mean_std = tuple(torch.tensor(v, device=x.device).view(1, -1, 1, 1)
                                       for v in (self.mean, self.std))
            x = x.sub_(self._mean_std[0]).div_(self._mean_std[1])
        return x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the model takes it: normalised, channels-last if asked for."""
        x = self.normalise(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_batch(self, idx: torch.Tensor, gen: torch.Generator | None,
                    part: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch ``idx`` (indices on the data's device), augmented if the recipe says so.

        ``part`` keeps only that slice of the batch (one rank's shard); the random crops and flips
        are still drawn for the whole batch, so the shards of all ranks equal one process's batch.
        """
        part = part or slice(None)
        if not self.augment:
            return self.prepare(self.train_x[idx[part]]), self.train_y[idx[part]]
        x = random_crop_flip(self._padded_train(), idx, 4, gen, part)
        return self.prepare(x), self.train_y[idx[part]]

    def _padded_train(self) -> torch.Tensor:
        # Zero-pad once (uint8, on the device): torchvision's RandomCrop(padding=4) pads with
        # black pixels before normalisation, which is what zeros here are too.
        if self._padded is None:
            self._padded = torch.nn.functional.pad(self.train_x, (4, 4, 4, 4))
        return self._padded


def random_crop_flip(padded: torch.Tensor, idx: torch.Tensor, pad: int,
                     gen: torch.Generator | None, part: slice | None = None) -> torch.Tensor:
    """Random (H x W) crops of the padded images ``padded[idx]``, each flipped with p = 1/2.

    One gather for the whole batch: crop offsets and the flip become index arithmetic. The draws
    are made for all of ``idx``; ``part`` then keeps a slice of the batch.
    """
    b = idx.numel()
    _, c, hp, wp = padded.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    dev = padded.device
    offs = torch.randint(0, 2 * pad + 1, (2, b), device=dev, generator=gen)
    flip = torch.randint(0, 2, (b,), device=dev, generator=gen).bool()
    if part is not None:
        idx, offs, flip = idx[part], offs[:, part], flip[part]
    ar_h, ar_w = torch.arange(h, device=dev), torch.arange(w, device=dev)
    rows = offs[0, :, None] + ar_h  # b x h
    cols = offs[1, :, None] + torch.where(flip[:, None], (w - 1) - ar_w, ar_w)  # b x w
    return padded[idx[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
