"""Training children die with the daemon that started them.

A child of a daemon killed with `kill -9` would otherwise keep training and promote models that
nobody serves. The child puts itself in its own process group (so the daemon can kill it and
anything it started in one call, and a terminal's Ctrl-C reaches only the daemon), asks Linux to
SIGKILL it when its parent dies (`PR_SET_PDEATHSIG`), and, where that is not available or the
parent died before it was set, a watchdog thread exits once the parent pid changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 1.0


def _pdeathsig(sig: int) -> bool:
    """Ask the kernel to send `sig` when the parent exits; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return False


def _orphaned(parent_pid: int) -> bool:
    return os.getppid() != parent_pid


def _watch(parent_pid: int) -> None:
    while not _orphaned(parent_pid):
        threading.Event().wait(WATCHDOG_PERIOD_S)
    kill_group(os.getpid(), signal.SIGKILL)
    os._exit(1)


def bind_to_parent(parent_pid: int) -> None:
    """Called first thing in the child: own process group, die with `parent_pid`."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _pdeathsig(signal.SIGKILL)
    if _orphaned(parent_pid):  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="parent-watchdog", daemon=True).start()


def kill_group(pid: int, sig: int) -> None:
    """Signal the process group led by `pid` (the child and whatever it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
