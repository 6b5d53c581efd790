"""The one base class of problems a user can fix, so the command-line programs can tell them from bugs."""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """A problem with what the user gave (a file, an option, a config), not a bug in the program.

    The message names the file or option and the reason. The command-line programs print it on one line and exit
    with code 1 (:mod:`sinet_plus.cli`); any other exception is a bug and keeps its traceback.
    """


class PathError(UserError):
    """A file or folder that cannot be used; ``str()`` is ``"<path>: <reason>"``.

    Args:
        path: the file or folder.
        reason: what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
