"""Seeds and random-generator states: what makes a run reproducible and a resume exact."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Generators:
    """The run's own generators: ``data`` draws each epoch's order of the training images (on the
    CPU), ``aug`` the crops and flips on the data's device (on a CPU run, the same generator)."""

    data: torch.Generator
    aug: torch.Generator

    def as_dict(self) -> dict[str, torch.Generator]:
        return {"data": self.data, "aug": self.aug}


def make_generators(seed: int, device: torch.device) -> Generators:
    # seed + 1 is also the global seed of run seed+1 (its initial weights): one random stream, made
    # into an epoch order here and into weights there, so no two runs share an order or weights.
    # Streams spawned apart (numpy SeedSequence) would be cleaner; a change would move every number.
    data = torch.Generator().manual_seed(seed + 1)
    if device.type == "cpu":
        return Generators(data, data)
    return Generators(data, torch.Generator(device=device).manual_seed(seed + 2))


def rng_states(gens: Generators) -> dict:
    out = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "gens": {k: g.get_state() for k, g in gens.as_dict().items()}}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(states: dict, gens: Generators) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for k, g in gens.as_dict().items():
        g.set_state(states["gens"][k])
