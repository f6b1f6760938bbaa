"""The table of training modes: every part of the suite (Config, the command line, the training
step, checkpoints, the report, the benchmark) reads the modes from here.

A mode is declared once, beside its loss, as a :class:`~labelemb.modes.base.Mode`; adding a rival
is one new module in this package and one line below (or, from your own code, :func:`register`).
"""
from __future__ import annotations

from ..bounds import ConfigError
from . import baseline, emb, smoothing, tfkd
from .base import Mode, Setting, StatefulLoss

MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    """Add ``mode`` to the table (after the others); ValueError if its name or a setting's is taken."""
    if mode.name in MODES:
        raise ValueError(f"a mode named {mode.name!r} is registered already")
    taken = {s.name: m.name for m in MODES.values() for s in m.settings}
    for s in mode.settings:
        if s.name in taken:
            raise ValueError(f"mode {mode.name!r}: setting {s.name!r} is a setting of mode {taken[s.name]!r} already")
    MODES[mode.name] = mode
    return mode


for _mode in (baseline.MODE, emb.MODE, smoothing.LS, smoothing.OLS, tfkd.MODE):
    register(_mode)


def get(name: str) -> Mode:
    """The mode called ``name``; ConfigError naming the known ones otherwise."""
    if name not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {name!r}")
    return MODES[name]


def with_role(role: str) -> Mode:
    """The mode of this role ("reference": the baseline; "method": the paper's)."""
    return next(m for m in MODES.values() if m.role == role)


def owner(setting: str) -> Mode | None:
    """The mode that has the setting ``setting``, None if none has."""
    return next((m for m in MODES.values() if m.setting(setting) is not None), None)


__all__ = ["MODES", "Mode", "Setting", "StatefulLoss", "register", "get", "with_role", "owner"]
