"""The one argument parser of the suite's commands (the four scripts, the report, the benchmark)."""
from __future__ import annotations

import argparse
import os
import sys


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2 (argparse's default prints the usage too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except None and on/off flags (their help says what the default does)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, description: str, command: str | None = None) -> Parser:
    """``command``: the console command that also runs it (pip install); named as such when so started."""
    if command and os.path.basename(sys.argv[0]) == command:
        prog = command
    return Parser(prog=prog, description=description, formatter_class=HelpFormatter)
