"""Run a check as an ordinary user: root ignores permission bits, so tests of what an unprivileged
process (a read-only directory, a systemd dynamic user) can do fork and drop to `uid` first."""

from __future__ import annotations

import os
from collections.abc import Callable


def as_user(check: Callable[[], str], uid: int = 65534) -> str:
    """`check()` in a forked child running as `uid` (when we are root); its answer, or the error."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            if os.geteuid() == 0:
                os.setgid(uid)
                os.setuid(uid)
            try:
                msg = check()
            except Exception as exc:
                msg = f"error: {exc}"
            os.write(write_fd, msg.encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        msg = fh.read()
    os.waitpid(pid, 0)
    return msg
