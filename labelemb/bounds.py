"""The allowed values of a number and the one check of them (used by Config, the modes and the CLI)."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A setting outside its range: one line for the command line, a ValueError for library users."""


@dataclass(frozen=True)
class Bound:
    """The allowed values of one number: ``lo``/``hi`` (None: unbounded), each end open or closed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    hint: str = ""  # said after the error, e.g. "the paper uses 2"
    text: str = ""  # how the range is said, when not simply from lo/hi
    integer: bool = False  # a count (epochs, batch size, ...), not a real number

    def holds(self, v) -> bool:
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    def describe(self) -> str:
        if self.text:
            return self.text
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def check_value(shown: str, value, bound: Bound) -> None:
    """:class:`ConfigError` unless ``value`` is a finite number in ``bound``; ``shown`` names it."""
    hint = f"; {bound.hint}" if bound.hint else ""
    kind = numbers.Integral if bound.integer else numbers.Real  # numpy scalars too
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{shown} must be {'an integer' if bound.integer else 'a number'} {bound.describe()}, "
                          f"got {value!r}")
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):  # (a huge int overflows isfinite)
        raise ConfigError(f"{shown} must be a finite number {bound.describe()}, got {value}{hint}")
    if not bound.holds(value):
        raise ConfigError(f"{shown} must be {bound.describe()}, got {value}{hint}")
