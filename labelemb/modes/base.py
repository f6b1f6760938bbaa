"""What a training mode declares: :class:`Mode` and its :class:`Setting` s, and the interface of a
loss that carries state from one epoch to the next (:class:`StatefulLoss`).

A mode is a loss and what the rest of the suite needs to know about it: its name (``--mode``), how
the report labels and colours it, which outputs its loss takes (head 1 only, or both heads and
E[y]), its own settings (flags, ranges, defaults; saved in records and checkpoints), and
optionally what it does to the model before training and what it checks of the data. Every
part of the suite reads these declarations from the table in :mod:`labelemb.modes`; nothing else
knows a mode by its name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from ..bounds import Bound, ConfigError, check_value
from ..embedding import batch_reduction  # noqa: F401  (the losses of the modes divide batches by it)

if TYPE_CHECKING:  # types only: a mode module imports nothing of the training stack
    from ..config import Config
    from ..dataset import Dataset
    from ..models import LabelEmbNet

KINDS = ("number", "integer", "flag", "path")


@dataclass(frozen=True)
class Setting:
    """One setting of a mode: a Config value (``cfg.<name>``), a flag ``--<name with - for _>``,
    a key of the run's record and checkpoint. A checkpoint must share it with the command that
    resumes it; the report warns when runs of the mode differ in it."""

    name: str
    default: Any  # None: not set (a path), False: off (a flag)
    help: str
    bound: Bound | None = None  # numbers and integers
    kind: str = "number"  # one of KINDS
    metavar: str | None = None
    hint: str = ""  # a path setting: what to pass, said when the file is missing

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value) -> None:
        """ConfigError unless ``value`` is one this setting takes (named by its flag)."""
        if self.bound is not None:
            check_value(self.flag, value, self.bound)
        elif self.kind == "flag" and not isinstance(value, bool):
            raise ConfigError(f"{self.flag} is on or off (True or False), got {value!r}")
        elif self.kind == "path" and value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.flag} must be a file name, got {value!r}")


def _no_heads(cfg) -> bool:
    return False


@dataclass(frozen=True)
class Mode:
    """A training mode (see the module docstring)."""

    name: str
    label: str  # how the report names it
    color: str  # its colour in the report's figures (a matplotlib colour)
    help: str  # a phrase for --mode's help
    loss: Callable[["Config", "LabelEmbNet"], nn.Module]  # the criterion of a run
    settings: tuple[Setting, ...] = ()
    # "reference": what the others are compared to (baseline); "method": the paper's method (LabelEmb),
    # compared to the reference in the paper's tables; "rival": any other method
    role: str = "rival"
    # whether a training step computes head 2 and E[y] for the loss, criterion(o1, y, o2, E[y]);
    # otherwise the loss takes head 1's logits only, criterion(o1, y)
    two_heads: Callable[["Config"], bool] = _no_heads
    snapshots_embedding: bool = False  # E is written after every epoch (<stem>_emb.npy)
    model_options: Callable[["Config"], dict] = lambda cfg: {}  # extra arguments of models.build_model
    prepare_model: Callable[["Config", "LabelEmbNet", bool], None] | None = None  # (cfg, model, restored)
    check: Callable[["Config"], None] | None = None  # combinations of settings: ConfigError
    check_data: Callable[["Config", "Dataset"], None] | None = None  # before any training: UserError
    # what the paper reports for this mode: (task, dataset) -> (mean test error %, std, seconds per epoch)
    paper: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def defaults(self) -> dict:
        return {s.name: s.default for s in self.settings}


class StatefulLoss(nn.Module):
    """A loss that carries state from one epoch to the next (online label smoothing).

    The training loop calls :meth:`end_epoch` after every epoch, and saves :meth:`checkpoint_state`
    with each checkpoint, handing it back to :meth:`load_checkpoint_state` on resume.
    """

    def end_epoch(self, dist=None) -> None:
        raise NotImplementedError

    def checkpoint_state(self, dist=None) -> dict:
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict, carry_sums: bool = True) -> None:
        raise NotImplementedError
