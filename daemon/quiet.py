"""Quiet by default: TensorFlow's and CUDA's start-up banners only at `--log-level debug`.

TensorFlow 2.2x logs through absl before absl is initialised, which writes straight to file
descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says ("All log messages before absl::InitializeLog()
…", oneDNN, cudart_stub, cpu_feature_guard, cuInit). So besides the environment variables (set
before TensorFlow is imported, inherited by training child processes), native writes to fd 2 pass
through a line filter that drops exactly those banners; Python's own stderr (our logs, click,
rich) keeps writing to the real stream, unfiltered.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import re
import sys
import threading

#: Native log lines that are noise to an operator (kept at --log-level debug).
BANNER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:. ]+\d+ [\w.]+:\d+\] "
    rb"|E\d{4} [\d:. ]+\d+ [\w.]+:\d+\] .*(cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS|TensorRT|factory)"
    rb"|To enable the following instructions: .*rebuild TensorFlow"
    rb"|[\d/.:\[\]]*WARNING:.*(dbus|gpu))"
)

_installed = False


def _python_loggers(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.ERROR
    for name in ("tensorflow", "absl", "h5py", "jax", "torch"):
        logging.getLogger(name).setLevel(level)


def configure(debug: bool) -> None:
    """Call once at start, before anything imports TensorFlow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "3")
    _python_loggers(debug)
    if not debug:
        filter_native_stderr()


def filter_native_stderr() -> None:
    """Route fd 2 through a banner filter; `sys.stderr` keeps the real stream. Idempotent; a no-op
    when stderr is not fd 2 (an in-process test runner captures it)."""
    global _installed
    if _installed:
        return
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return
    _installed = True
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(os.dup(real), "w"), encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace",
        line_buffering=True, write_through=True,
    )

    def pump() -> None:
        with io.FileIO(read_end, "r") as src:
            for line in src:
                if not BANNER.match(line):
                    with contextlib.suppress(OSError):
                        os.write(real, line)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        with contextlib.suppress(OSError):
            os.dup2(real, 2)  # closes our write end: the pump sees EOF once children let go
        thread.join(timeout=1.0)

    atexit.register(restore)
