"""The package's own error classes, for mistakes a user can fix.

Only these become a one-line message at the command line (and in the example scripts,
through :func:`one_line_errors`); any other exception, from torch, numpy or a bug
here, keeps its traceback so that it stays visible.

- :class:`UserError` (a ``ValueError``): a bad setting, a bad or mismatched file.
- :class:`MissingFileError` (also a ``FileNotFoundError``): a file or folder that
  should be there is not.
- :class:`UnfinishedError`: the work ran but part of it did not finish (exit status 1).
- :class:`NonFiniteLossError` (also a ``FloatingPointError``): the loss became NaN or
  inf; training stopped and a checkpoint of this run, if any, was kept.
"""
from __future__ import annotations

import os
import sys


class UserError(ValueError):
    """A mistake the user can fix; the message says what was expected and how to fix it."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or the data it needs) does not exist."""


class DiskFullError(UserError, OSError):
    """A write found no space (ENOSPC) or no quota (EDQUOT) left; nothing half-written was left behind."""


class UnfinishedError(UserError):
    """The command ran but some of its work did not finish (a run of a grid, an image of a build).

    The command line ends with this one line and exit status 1, not 2: the settings were
    fine, the work is incomplete, and re-running the same command finishes it."""

    exit_code = 1


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or inf; training stopped and the last good checkpoint was kept."""


def debug() -> bool:
    """``DLSTUDIO_ASPP_DEBUG=1``: show tracebacks for user errors too."""
    return bool(os.environ.get("DLSTUDIO_ASPP_DEBUG"))


def one_line_errors() -> None:
    """Make a :class:`UserError` end a script with one line on stderr instead of a traceback.

    For stock-like scripts (``examples/``). Other exceptions keep their traceback.
    """
    if debug():
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, UserError):
            print(f"error: {value}", file=sys.stderr)
            return
        previous(kind, value, tb)

    sys.excepthook = hook
