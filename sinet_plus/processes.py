"""Child processes that die with their parent.

A DataLoader or pool worker blocked on a pipe, or a Streamlit server, outlives a parent killed with SIGKILL
(no Python code runs to stop it) and keeps its memory, its port or its database open under PID 1. On Linux the
kernel can deliver a signal to a process when the thread that started it exits (``PR_SET_PDEATHSIG``); every
worker and child the project starts asks for it. Elsewhere these helpers do nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux only).

    Args:
        parent: pid of the process that started this one; when it is already gone (it died before this
            call), this process gets ``sig`` now.
        sig: SIGKILL for workers (nothing to clean up), SIGTERM for servers that should stop gracefully.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


class DiesWithParent:
    """A worker initializer (DataLoader ``worker_init_fn``, ``multiprocessing.Pool`` initializer) that first makes
    the worker die with the process that built it, then calls ``initializer``; picklable for spawned workers.

    Args:
        initializer: the worker's own set-up, called with the arguments the worker gets (or None).
    """

    def __init__(self, initializer: Callable[..., Any] | None = None):
        self.parent = os.getpid()
        self.initializer = initializer

    def __call__(self, *args: Any) -> None:
        die_with_parent(self.parent)
        if self.initializer is not None:
            self.initializer(*args)


def start_child(argv: Sequence[str], sig: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv, **popen)`` for a child that gets ``sig`` when this process exits, however it
    exits (a SIGKILL included); call it from the main thread, whose exit is what the kernel watches."""
    parent = os.getpid()
    return subprocess.Popen(list(argv), preexec_fn=lambda: die_with_parent(parent, sig), **popen)
