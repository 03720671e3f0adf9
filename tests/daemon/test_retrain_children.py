"""Training children die with the daemon and are killed as a process group on stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from daemon.live.retrainer import ChildRun

REPO = Path(__file__).resolve().parents[2]


def sleeper(_req: Any, conn: Any, _fmt: str) -> None:
    """A stand-in training job: starts a helper process of its own, reports pids, then hangs."""
    helper = subprocess.Popen(["sleep", "600"])
    conn.send(("pids", (os.getpid(), os.getpgrp(), helper.pid)))
    time.sleep(600)


def killed(_req: Any, conn: Any, _fmt: str) -> None:
    """A training child that dies without an answer: its pipe closes a moment before it ends."""
    conn.close()
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_killed_without_an_answer_is_reported_with_its_exit_code() -> None:
    """What the operator reads (log, `barcast retrain`, the job's error) names the signal; before,
    the pipe's end was seen first and the message said `exit code None`."""
    import pytest

    from db.errors import BarcastError

    run = ChildRun(None, target=killed)  # type: ignore[arg-type]
    with pytest.raises(BarcastError, match=r"^training process died \(exit code -9 \(SIGKILL\)\)$"):
        run.wait(60)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie waiting for a reaper has stopped running


def _wait_gone(pid: int, limit_s: float = 60.0) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return False


def _pids(run: ChildRun) -> tuple[int, int, int]:
    assert run._recv.poll(120), "child never reported"
    kind, pids = run._recv.recv()
    assert kind == "pids"
    return pids  # type: ignore[no-any-return]


def test_child_runs_in_its_own_group_and_terminate_kills_the_group() -> None:
    run = ChildRun(None, target=sleeper)  # type: ignore[arg-type]
    child, group, helper = _pids(run)
    assert group == child != os.getpgrp()
    run.terminate()
    assert _wait_gone(child) and _wait_gone(helper), "terminate left a process of the child's group running"


PARENT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from daemon.live.retrainer import ChildRun
from tests.daemon.test_retrain_children import sleeper
run = ChildRun(None, target=sleeper)
assert run._recv.poll(120)
print(run._recv.recv()[1][0], flush=True)
time.sleep(600)
"""


def test_child_dies_when_the_daemon_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_gone(child), "the training child outlived its killed daemon"
    finally:
        parent.kill()
        parent.wait()
