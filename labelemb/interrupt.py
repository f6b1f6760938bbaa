"""How a run stops early: on a signal (resumable) or on its own (a non-finite loss)."""
from __future__ import annotations

import os
import signal

from .distributed import Dist
from .results import remove_in_progress

STOP_CHECK_EVERY = 20  # under DDP, steps between agreeing on a stop request (a collective, so not every step)


class RunFailed(Exception):
    """The run stopped on its own (non-finite loss); its record is marked failed."""


class Interrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written and the run can be resumed, unless ``kept`` says what
    was kept instead (an --overwrite run stopped before its first checkpoint: the earlier run), or
    ``between_runs`` (a --runs sweep stopped after a run that completed, before the next began)."""

    def __init__(self, signal_name: str, kept: str = "", between_runs: bool = False):
        super().__init__(signal_name)
        self.signal, self.kept, self.between_runs = signal_name, kept, between_runs


# SIGUSR1: what Slurm sends before a job's time limit (sbatch --signal=USR1@120, as labelemb-sweep asks);
# SIGUSR2: submitit's default for the same
SIGNALS = (signal.SIGINT, signal.SIGTERM, *(getattr(signal, s) for s in ("SIGUSR1", "SIGUSR2") if hasattr(signal, s)))


class StopFlag:
    """Set by SIGINT/SIGTERM (and SIGUSR1/SIGUSR2, Slurm's warnings, as SIGTERM) so the loop stops after
    the current step and writes a checkpoint.

    A second SIGINT exits at once with code 130, removing the temporary file being written (every
    file is written atomically, so nothing is half-written); a second SIGTERM is ignored while the
    checkpoint is written. Once the block is left with a stop requested, the process is on its way
    out with code 130, so from then on either signal exits at once with that code (not 143).
    """

    def __init__(self):
        self.requested: str | None = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            print("\nsecond interrupt: exiting now (files are written atomically, nothing is half-written)",
                  flush=True)
            _exit_now(signum, frame)
        self.requested = self.requested or signal.Signals(signum).name

    def __enter__(self):
        for s in SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, _exit_now if self.requested else h)


def _exit_now(signum, frame):
    remove_in_progress()
    os._exit(130)


def stop_agreed(stop: StopFlag | None, dist: Dist, step: int, at_pause: bool) -> bool:
    """Whether to stop after this step. One process: the flag. Under DDP all ranks must take the
    same branch, so they agree (a sum over ranks) at pauses and every STOP_CHECK_EVERY steps."""
    wanted = stop is not None and stop.requested is not None
    if dist.active and not at_pause and step % STOP_CHECK_EVERY:
        return False
    return dist.any(wanted)
