"""Mode ``emb``: LabelEmb (SPEC §1). The loss and the label embedding live in
:mod:`labelemb.embedding` (a file that stands alone); this module declares the mode: its settings,
what it does to the model (``--init-emb``, ``--freeze-emb``) and what it checks first."""
from __future__ import annotations

import numpy as np
import torch

from ..bounds import Bound, ConfigError
from ..embedding import ALPHA, BETA, TAU, LabelEmbLoss, SoftTargetLoss
from ..errors import UserError
from .base import Mode, Setting

NPY_MAGIC = b"\x93NUMPY"


def load_init_emb(path: str, num_classes: int) -> torch.Tensor:
    """E from a saved ``.npy`` (``--init-emb``): an n x n matrix, or an emb run's per-epoch stack
    (epochs, n, n), of which the last epoch is taken. UserError (one line) for anything else."""
    hint = "pass the _emb.npy file of an earlier emb run"
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise UserError(f"--init-emb {path}: cannot read it as a .npy array (not a .npy file: no NumPy "
                                f"header); {hint}")
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"--init-emb {path}: cannot read it as a .npy array ({e}); {hint}") from None
    n = num_classes
    shape = tuple(a.shape)
    if a.ndim == 3 and shape[0] >= 1:
        a = a[-1]
    if a.shape != (n, n):
        raise UserError(f"--init-emb {path} holds an array of shape {shape}; expected ({n}, {n}) or "
                        f"(epochs, {n}, {n}) for the {n} classes of this dataset")
    if a.dtype.kind not in "fiu":
        raise UserError(f"--init-emb {path} holds {a.dtype} values; expected a real n x n matrix")
    if not np.isfinite(a).all():
        raise UserError(f"--init-emb {path} holds non-finite values (NaN or inf); pass the embedding of "
                        "a run that did not diverge")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def make_loss(cfg, model):
    if cfg.freeze_emb:  # E fixed: beta*CE(y, o1) + (1-beta)*CE(softmax(E[y]), o1), constant soft targets
        return SoftTargetLoss(model.emb.soft_targets(), hard_weight=cfg.beta)
    return LabelEmbLoss(tau=cfg.tau, alpha=cfg.alpha, beta=cfg.beta)


def prepare_model(cfg, model, restored: bool) -> None:
    """E from --init-emb (unless the weights come from a checkpoint); E fixed with --freeze-emb."""
    if cfg.init_emb and not restored:
        with torch.no_grad():
            model.emb.weight.copy_(load_init_emb(cfg.init_emb, model.num_classes))
    if cfg.freeze_emb:
        model.emb.weight.requires_grad_(False)


def check(cfg) -> None:
    if cfg.emb_dim > 0 and (cfg.init_emb is not None or cfg.freeze_emb):
        raise ConfigError(f"{'--init-emb' if cfg.init_emb is not None else '--freeze-emb'} works on the full "
                          "n x n matrix; it cannot be combined with --emb-dim")


def check_data(cfg, data) -> None:
    if cfg.init_emb is not None:
        load_init_emb(cfg.init_emb, data.num_classes)  # its shape is checked before any training


MODE = Mode(
    name="emb", label="LabelEmb", color="tab:red", help="LabelEmb (the paper's method)",
    loss=make_loss, role="method",
    settings=(
        Setting("tau", TAU, "temperature of head 2's soft targets for E", Bound(0, lo_open=True, hint="the paper uses 2")),
        Setting("alpha", ALPHA, "margin of the L_re term", Bound(0, 1, lo_open=True, hint="the paper uses 0.9")),
        Setting("beta", BETA, "weight of the hard-label term on head 1", Bound(0, 1, hint="the paper uses 0.5")),
        Setting("emb_dim", 0, "compressed label embedding E[y] = relu(Linear(H -> n)(Embedding(n, H)[y])), memory "
                "O(n*H) for many classes; 0 = the paper's full n x n matrix",
                Bound(0, integer=True, text=">= 1 (or 0 for the full n x n matrix)"), kind="integer", metavar="H"),
        Setting("init_emb", None, "start E from this .npy (an n x n matrix, or the <stem>_emb.npy of an earlier emb "
                "run, whose last epoch is taken); default: the identity", kind="path", metavar="PATH",
                hint="pass the _emb.npy of an earlier emb run"),
        Setting("freeze_emb", False, "keep E fixed; the loss is beta*CE(y, o1) + (1-beta)*CE(softmax(E[y]), o1), "
                "head 2 unused", kind="flag"),
    ),
    two_heads=lambda cfg: not cfg.freeze_emb, snapshots_embedding=True,
    model_options=lambda cfg: {"emb_dim": cfg.emb_dim or None}, prepare_model=prepare_model,
    check=check, check_data=check_data,
    paper={("cifar100", "cifar100"): (23.97, 0.33, 87.8), ("cifar10", "cifar10"): (6.97, 0.22, 42.5),
           ("cnn", "mnist"): (0.55, 0.03, 5.46)})
