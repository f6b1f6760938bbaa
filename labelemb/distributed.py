"""Several processes (torchrun): one run trained with DistributedDataParallel.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op and a
run is one process. Under torchrun a process group is made even for one process (NCCL on one
GPU), so that the run takes the same path as on many. Each rank takes a contiguous shard of
every global batch (the recipe's batch, same permutation and same augmentation draws on every
rank), so the ranks together see exactly the batches one process would, and the losses are
scaled so that DDP's gradient average equals the single-process gradient (see
``LabelEmbLoss.forward(global_batch=...)``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collectives' tensors live (NCCL needs CUDA tensors)
    active: bool = False  # started by torchrun: a process group, DDP and sharding, however many processes

    @property
    def main(self) -> bool:
        """Only the main process writes records, checkpoints and prints."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (a no-op for one process)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank (every rank must call this)."""
        if not self.active:
            return flag
        return bool(self.sum_(torch.tensor([float(flag)], device=self.device)).item())

    def barrier(self) -> None:
        """Wait for every rank (so none tears down while rank 0 still writes its files)."""
        if self.active:
            dist.barrier()

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place maximum over ranks (a no-op for one process)."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t


def from_env() -> Dist:
    """The process's place in a torchrun job; rank 0 of 1, not active, without one.

    Several processes (WORLD_SIZE > 1), or one started by torchrun itself (TORCHELASTIC_RUN_ID):
    a cluster's wrapper that only exports RANK=0 WORLD_SIZE=1 for a plain process changes nothing.
    """
    world = _env_int("WORLD_SIZE", "1")
    if "RANK" not in os.environ or (world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ):
        return Dist()
    return Dist(_env_int("RANK"), world, _env_int("LOCAL_RANK", "0"), active=True)


def _env_int(name: str, default: str | None = None) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"the environment variable {name}={value!r} is not a whole number; start the script with "
                        "torchrun, or without RANK/WORLD_SIZE in the environment") from None


def setup(d: Dist, device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group (NCCL on CUDA, gloo on CPU); one GPU per local rank."""
    if not d.active:
        return d, device
    if device.type == "cuda":
        if not 0 <= d.local_rank < torch.cuda.device_count():
            raise UserError(f"local rank {d.local_rank} has no GPU of its own: this machine shows "
                            f"{torch.cuda.device_count()}; start at most that many processes per machine "
                            "(torchrun --nproc_per_node)")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend)
        except (ValueError, RuntimeError) as e:  # no rendezvous address, an unreachable peer, ...
            first = " ".join(str(e).split())[:300]
            raise UserError(f"cannot join the torchrun process group ({backend}: {first}); start the script "
                            "with torchrun, or without RANK/WORLD_SIZE in the environment") from None
    return replace(d, device=str(device)), device


def teardown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
