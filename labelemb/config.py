"""A run's settings: the four recipes (SPEC §2) and one frozen, typed :class:`Config`.

Each fact lives here once: every allowed range of the recipe's numbers (:data:`BOUNDS`, checked
by :func:`check`), each recipe's defaults (:data:`RECIPES`), and which settings a checkpoint must
share with the command that resumes it (the fields marked ``resume``). A mode's own settings
(LabelEmb's tau, alpha, beta, ...) are declared by the mode (:mod:`labelemb.modes`) and held in
``Config.settings``; ``cfg.tau`` reads them like fields, and records and checkpoints store them
beside the fields, as before.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from . import modes
from .bounds import Bound, ConfigError, check_value

LR = 1e-3  # SPEC §2: the optimiser
DEFAULT_MODE = modes.with_role("method").name  # the paper's method, LabelEmb
ARCHS = ("mlp", "cnn", "resnet18", "resnet8")
BN_ARCHS = ("resnet18", "resnet8")  # the architectures with BatchNorm
# BatchNorm scales at the start: "uniform" in [0, 1) as in PyTorch 0.2, which the authors ran (SPEC §2);
# "ones" as in PyTorch >= 1.0
BN_INITS = ("uniform", "ones")
DEVICES = ("auto", "cpu", "cuda")
REPORTED = ("final", "best_val")


BOUNDS = {
    "lr": Bound(0, lo_open=True, hint="the paper uses 1e-3"),
    "lr_decay": Bound(0, lo_open=True),
    "epochs": Bound(1, integer=True),
    "batch_size": Bound(1, integer=True),
    "test_batch_size": Bound(1, integer=True),
    "evals_per_epoch": Bound(1, integer=True),
    "lr_decay_every": Bound(0, integer=True),
    "val_size": Bound(0, integer=True),
    "num": Bound(0, integer=True),
    # the run's generators are seeded with seed, seed + 1 and seed + 2, each at most 2**64 - 1
    "seed": Bound(0, 2**64 - 3, integer=True, text="in [0, 2**64 - 3]", hint="the generators take seed + 2"),
    "runs": Bound(1, integer=True),
    "world_size": Bound(1, integer=True),
}


def check(name: str, value, flag: bool = False) -> None:
    """:class:`ConfigError` unless ``value`` is a finite number in ``BOUNDS[name]``.

    ``flag``: name the setting as its command-line flag (``--batch-size``) in the message.
    """
    check_value("--" + name.replace("_", "-") if flag else name, value, BOUNDS[name])


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(map(str, allowed))}, got {value!r}")


def _resume(default=MISSING, **meta):
    """A setting a checkpoint must share with the command that resumes it."""
    return field(default=default, metadata={"resume": True, **meta})


def _variant(default):
    """An opt-in setting that changes what is trained: a checkpoint must share it, and the report
    warns when runs of one mode differ in it."""
    return _resume(default, variant=True)


@dataclass(frozen=True)
class Config:
    """Every setting of one run. Saved (as a dict) in its record and checkpoint.

    Build one with :meth:`Recipe.config` (a recipe's defaults plus changes), from the command
    line (``labelemb.cli.make_config``) or from a saved record (:meth:`from_record`). Invalid
    values raise :class:`ConfigError` when it is made.
    """

    # The recipe (SPEC §2); a recipe's defaults come from RECIPES.
    task: str = _resume()
    arch: str = _resume()
    dataset: str = _resume()
    epochs: int = _resume()
    batch_size: int = _resume()  # the global batch (all processes together)
    test_batch_size: int = _resume()
    lr: float = _resume(LR)
    lr_decay_every: int = _resume(0)  # epochs between decays; 0 = constant learning rate
    lr_decay: float = _resume(1.0)
    evals_per_epoch: int = _resume(1)
    drop_last: bool = _resume(False)
    val_size: int = _resume(0)  # first training images held out for validation
    reported: str = _resume("final")  # "final" test error, or test error at the "best_val" point
    # The method: a mode of the table (labelemb.modes) and its own settings (defaults filled in);
    # every one a checkpoint must share, and cfg.<name> reads it.
    mode: str = _resume(DEFAULT_MODE)
    settings: dict = field(default_factory=dict)
    # Which run, and where.
    seed: int = _resume(0)
    num: int = 0  # run index, part of the file names
    dry_run: bool = _resume(False)
    world_size: int = 1
    quiet: bool = False
    data: str | None = None
    results_dir: str | None = None
    device: str = "auto"
    tensorboard: str | None = None  # the folder of this run's TensorBoard log; None: no log
    # Numerics and speed (opt-in; the defaults are SPEC's fp32).
    amp: bool = _variant(False)  # bf16 autocast
    tf32: bool = _variant(False)  # TF32 matmuls and convolutions (CUDA); see saved_setting for older records
    channels_last: bool = False
    compile: bool = False
    # Initialisation of BatchNorm scales: BN_INITS for the architectures with BatchNorm, None for the others.
    bn_init: str | None = _variant(None)
    resize: bool = _variant(False)  # --dataset imagefolder: images scaled to 32x32

    def __post_init__(self):
        mode = modes.get(self.mode)
        clash = [s.name for s in mode.settings if s.name in _FIELDS]
        if clash:
            raise ConfigError(f"mode {mode.name}: its setting(s) {', '.join(clash)} are named as settings of every run")
        given = dict(self.settings)
        for key in given:
            if mode.setting(key) is None:
                m = modes.owner(key)
                raise ConfigError(f"--{key.replace('_', '-')} applies to --mode {m.name} only (got --mode {self.mode})"
                                  if m else f"mode {self.mode} has no setting {key!r}")
        resolved = {s.name: given.get(s.name, s.default) for s in mode.settings}
        for s in mode.settings:
            s.check(resolved[s.name])
        object.__setattr__(self, "settings", resolved)
        _choice("arch", self.arch, ARCHS)
        _choice("device", self.device, DEVICES)
        _choice("reported", self.reported, REPORTED)
        for name in ("lr", "lr_decay", "epochs", "batch_size", "test_batch_size", "evals_per_epoch",
                     "lr_decay_every", "val_size", "num", "seed", "world_size"):
            check(name, getattr(self, name), flag=True)
        self._check_combinations()
        if mode.check is not None:
            mode.check(self)

    def __getattr__(self, name: str):
        """A setting of the run's mode, as if it were a field: ``cfg.tau``."""
        settings = self.__dict__.get("settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} of mode {self.__dict__.get('mode')!r} has no {name!r}")

    def _check_combinations(self) -> None:
        if self.arch in BN_ARCHS:
            _choice("bn_init", self.bn_init, BN_INITS)
        elif self.bn_init is not None:
            raise ConfigError(f"--bn-init applies to the architectures with BatchNorm ({', '.join(BN_ARCHS)}), "
                              f"not {self.arch}")
        if self.resize and self.dataset != "imagefolder":
            raise ConfigError(f"--resize applies to --dataset imagefolder only (got --dataset {self.dataset})")
        if self.dataset == "imagefolder" and self.data is None:
            raise ConfigError("--dataset imagefolder needs --data DIR holding train/ and test/, each with one "
                              "sub-folder of images per class")

    # ------------------------------------------------------------------ derived
    @property
    def stem(self) -> str:
        """The run's name: its files are <stem>.json, <stem>.csv, ... in the results folder."""
        return run_stem(self.dataset, self.arch, self.mode, self.num)

    @property
    def two_heads(self) -> bool:
        """Whether a training step computes head 2 and E[y] for the loss (the mode says)."""
        return modes.get(self.mode).two_heads(self)

    def to_dict(self) -> dict:
        """The fields and, beside them, the mode's settings (as records and checkpoints hold them)."""
        d = asdict(self)
        return d | d.pop("settings")

    def replace(self, **changes) -> "Config":
        """A copy with ``changes``: fields, or settings of the (new) mode by their names."""
        return replace(self, **_split_settings(changes, dict(self.settings) if changes.get("mode", self.mode) ==
                                               self.mode else {}))

    # ------------------------------------------------------------------ saved configs
    @staticmethod
    def saved_setting(saved: dict, key: str):
        """Setting ``key`` of a saved config dict; for a key added after it was written, what the
        older code ran with: the field's default, except ``bn_init`` of a ResNet ("ones": PyTorch's
        default before --bn-init). ``tf32`` reads as False, though on CUDA the code before --tf32
        left PyTorch's defaults (TF32 convolutions, fp32 matmuls) in place; CPU runs had no TF32."""
        owner = None if key in _FIELDS else modes.owner(key)
        if key in saved and not (owner and saved[key] is None):  # a setting's null: its default (older ls records)
            return saved[key]
        if key == "bn_init" and saved.get("arch") in BN_ARCHS:
            return "ones"
        if key in _FIELDS:
            return _FIELDS[key].default
        return owner.setting(key).default if owner else None

    @classmethod
    def from_record(cls, saved: dict) -> "Config":
        """The Config of a record's or checkpoint's ``config`` dict (keys added later: see
        :meth:`saved_setting`; keys this version does not know are ignored). ConfigError when it
        is not one."""
        if not isinstance(saved, dict) or any(f not in saved for f in REQUIRED):
            raise ConfigError(f"a saved config must be a dict with {', '.join(REQUIRED)}")
        mode = modes.get(cls.saved_setting(saved, "mode"))
        own = {s.name: cls.saved_setting(saved, s.name) for s in mode.settings}  # other modes' keys: ignored
        return cls(**{k: cls.saved_setting(saved, k) for k in _FIELDS if k != "settings"}, settings=own)

    def resume_mismatch(self, saved: "Config") -> list[tuple[str, object, object]]:
        """(key, saved value, this value) for each resume key, and each of the mode's settings, where
        ``saved`` differs from this config."""
        diff = [(k, getattr(saved, k), getattr(self, k)) for k in RESUME_KEYS if getattr(saved, k) != getattr(self, k)]
        if saved.mode == self.mode:
            diff += [(k, saved.settings[k], v) for k, v in self.settings.items() if saved.settings[k] != v]
        return diff


def run_stem(dataset: str, arch: str, mode: str, num: int) -> str:
    """The name of a run's files (<stem>.json, <stem>.csv, ...)."""
    return f"{dataset}_{arch}_{mode}_{num}"


def _split_settings(changes: dict, settings: dict) -> dict:
    """``changes`` with the keys that are not Config fields moved into ``settings`` (a mode's)."""
    extra = {k: changes.pop(k) for k in list(changes) if k not in _FIELDS}
    return changes | {"settings": dict(changes.get("settings", settings)) | extra}


_FIELDS = {f.name: f for f in fields(Config)}
REQUIRED = tuple(k for k, f in _FIELDS.items() if f.default is MISSING and f.default_factory is MISSING)
RESUME_KEYS = tuple(k for k, f in _FIELDS.items() if f.metadata.get("resume"))
# Opt-in settings beyond the paper's recipe (the report warns when runs of one mode differ in one).
VARIANT_KEYS = tuple(k for k, f in _FIELDS.items() if f.metadata.get("variant"))


@dataclass(frozen=True)
class Recipe:
    """One entry script: its task's defaults as the authors' code ran it (SPEC §2)."""

    task: str
    arch: str
    datasets: tuple[str, ...]  # the first is the default
    results_dir: str
    epochs: int
    batch_size: int
    test_batch_size: int
    lr: float = LR
    lr_decay_every: int = 0
    lr_decay: float = 1.0
    evals_per_epoch: int = 1
    drop_last: bool = False
    val_size: int = 0
    reported: str = "final"

    @property
    def bn_init(self) -> str | None:
        """SPEC §2: BatchNorm scales start uniform in [0, 1) (PyTorch 0.2); None without BatchNorm."""
        return "uniform" if self.arch in BN_ARCHS else None

    def config(self, **changes) -> Config:
        """This recipe's Config, with ``changes`` (any Config field, or a setting of the mode) applied."""
        base = {k: v for k, v in asdict(self).items() if k not in ("datasets", "results_dir")}
        base.update(dataset=self.datasets[0], results_dir=self.results_dir, bn_init=self.bn_init)
        return Config(**_split_settings(base | changes, {}))


RECIPES = {
    # MNIST, 784-500-500 MLP: 15 epochs of 550 steps, 5 evaluations per epoch; reported: the test
    # error at the evaluation with the best validation accuracy.
    "mlp": Recipe(task="mlp", arch="mlp", datasets=("mnist", "fashion-mnist"), results_dir="mlp_results",
                  epochs=15, batch_size=100, test_batch_size=1000, evals_per_epoch=5, drop_last=True,
                  val_size=5000, reported="best_val"),
    # MNIST, the TensorFlow-tutorial CNN: as the MLP; reported: the test error at the last evaluation.
    "cnn": Recipe(task="cnn", arch="cnn", datasets=("mnist", "fashion-mnist"), results_dir="cnn_results",
                  epochs=15, batch_size=100, test_batch_size=1000, evals_per_epoch=5, drop_last=True,
                  val_size=5000),
    # CIFAR-10, the wide ResNet-8: 100 epochs at a constant lr 1e-3.
    "cifar10": Recipe(task="cifar10", arch="resnet8", datasets=("cifar10", "imagefolder"),
                      results_dir="10_results", epochs=100, batch_size=128, test_batch_size=100),
    # CIFAR-100, the wide ResNet-18: 100 epochs, lr 1e-3 x 0.2 every 40 epochs.
    "cifar100": Recipe(task="cifar100", arch="resnet18", datasets=("cifar100", "imagefolder"),
                       results_dir="100_results", epochs=100, batch_size=128, test_batch_size=100,
                       lr_decay_every=40, lr_decay=0.2),
}
