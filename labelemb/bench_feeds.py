"""The benchmark's data feeds: ours (as ``train.run`` draws batches) and the classic torchvision
DataLoader pipelines it is compared with."""
from __future__ import annotations

import torch

from .dataset import CIFAR_MEAN, CIFAR_STD, Dataset
from .rng import make_generators

CLASSIC_WORKERS = 2  # the authors' CIFAR DataLoader


class OurFeed:
    """Batches as ``train.run`` draws them: a permutation per epoch, then ``Dataset.train_batch``
    (gather, random crop + flip for CIFAR, normalise) on the training device."""

    name = "ours"

    def __init__(self, data: Dataset, batch_size: int, device: torch.device, seed: int):
        self.data, self.bs, self.device = data, batch_size, device
        self.gens = make_generators(seed, device)
        self.steps = len(data.train_y) // batch_size
        self.pos = self.steps  # draw a permutation on the first call

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos == self.steps:
            self.perm = torch.randperm(len(self.data.train_y), generator=self.gens.data).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos * self.bs:(self.pos + 1) * self.bs]
        self.pos += 1
        return self.data.train_batch(idx, self.gens.aug)


class ClassicImages(torch.utils.data.Dataset):
    """torchvision.datasets.CIFAR10 / MNIST in miniature: uint8 images (HWC, or HW for one channel)
    turned into a PIL image per sample and transformed, as those datasets' ``__getitem__`` do.
    The images are held on the host (as those datasets hold them), whatever device ``x`` is on."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        x = x.cpu().permute(0, 2, 3, 1)
        self.data = (x[..., 0] if x.shape[-1] == 1 else x).contiguous().numpy()
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


class ClassicFeed:
    """A DataLoader (shuffled) whose batches are moved to the device.

    ``kind="pil"``: the torchvision way (the authors' CIFAR pipeline; for MNIST the usual
    ``datasets.MNIST(transform=ToTensor())`` feed); ``kind="tensors"``: a TensorDataset of the
    images already as floats, the cheapest DataLoader feed there is (MNIST only).
    """

    def __init__(self, data: Dataset, task, batch_size: int, device: torch.device, channels_last: bool,
                 kind: str = "pil"):
        import torchvision.transforms as T

        if kind not in ("pil", "tensors") or (task.cifar and kind != "pil"):
            raise ValueError(f"kind must be 'pil' (any task) or 'tensors' (MNIST), got {kind!r} for {task.arch}")
        workers = 0
        if task.cifar:
            transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                   T.Normalize(CIFAR_MEAN, CIFAR_STD)])
            ds = ClassicImages(data.train_x, data.train_y, transform)
            workers = CLASSIC_WORKERS
            what = ("ClassicImages as torchvision.datasets.CIFAR10 (PIL image per sample: RandomCrop(32, "
                    "padding=4), RandomHorizontalFlip, ToTensor, Normalize)")
        elif kind == "pil":
            ds = ClassicImages(data.train_x, data.train_y, T.ToTensor())
            what = "ClassicImages as torchvision.datasets.MNIST (PIL image per sample, ToTensor)"
        else:
            ds = torch.utils.data.TensorDataset(data.train_x.cpu().float().div_(255), data.train_y.cpu())
            what = "TensorDataset of float images in [0, 1]"
        self.description = (f"{what} in DataLoader(batch_size={batch_size}, shuffle=True, num_workers={workers}), "
                            "then .to(device)")
        self.loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                                  drop_last=True)
        self.device, self.channels_last = device, channels_last
        self.it = iter(self.loader)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            x, y = next(self.it)
        except StopIteration:  # a new epoch (sizes are chosen so that timed windows do not hit this)
            self.it = iter(self.loader)
            x, y = next(self.it)
        x, y = x.to(self.device), y.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y
