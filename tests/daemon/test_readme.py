"""The README's first ten minutes, as written: `barcast run` and `barcast demo`, and the commands
it says to try "in another terminal" while they run (real processes, real sockets, no network)."""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BANNERS = ("absl::InitializeLog", "oneDNN", "cuda", "cuInit", "cpu_feature_guard", "TensorFlow binary")

pytestmark = pytest.mark.slow


def readme_commands() -> list[str]:
    """The bullet list after "Then, in another terminal" in the README's set-up section."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Then, in another terminal")
    block = text[start:text.index("\n\n", text.index("\n- ", start))]
    return [m for m in re.findall(r"^- `([^`]+)`", block, flags=re.M)]


def normalised(cmd: str) -> str:
    """A printed command without the options that point it at one daemon (the README's defaults)."""
    words = shlex.split(cmd)
    out: list[str] = []
    skip = False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--db", "--api", "--file"):
            skip = True
            continue
        out.append(re.sub(r"localhost:\d+", "localhost:8787", w))
    return " ".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A long-running command whose output lines are read as they come."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.out: list[str] = []
        self.err: list[str] = []
        for name, stream in (("out", self.p.stdout), ("err", self.p.stderr)):
            threading.Thread(target=self._pump, args=(name, stream), daemon=True).start()

    def _pump(self, name: str, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            (self.out if name == "out" else self.err).append(line)
            self.lines.put((name, line))

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None and self.lines.empty():
                break
            try:
                _, line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s (exit {self.p.poll()});\n"
                             f"stdout: {''.join(self.out)[-3000:]}\nstderr: {''.join(self.err)[-3000:]}")

    def interrupt(self, timeout: float = 60) -> int:
        self.p.send_signal(signal.SIGINT)
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()


def run_listed(cmd: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run one listed command as a person would; `tail -f` until it printed, then Ctrl-C."""
    argv = shlex.split(cmd)
    if "-f" in argv:
        proc = Proc(argv, env, cwd)
        try:
            proc.wait_for(r"\S", 60)
            time.sleep(0.5)
        finally:
            code = proc.interrupt(30)
        return code, "".join(proc.out), "".join(proc.err)
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh user: an empty home (so the data directory is new), the test's interpreter first."""
    if shutil.which("curl") is None:
        pytest.fail("the README's commands need curl")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("BARCAST_", "STATE_", "LOGS_", "RUNTIME_"))}
    e["HOME"] = str(tmp_path / "home")
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("XDG_DATA_HOME", None)
    e.pop("XDG_CONFIG_HOME", None)
    (tmp_path / "home").mkdir()
    yield e


def test_readme_lists_the_commands() -> None:
    assert readme_commands() == [
        "barcast status", "barcast tail -f", "barcast forecasts --latest", "barcast accuracy",
        "curl localhost:8787/health",
    ]


def test_demo_as_the_readme_says(env: dict[str, str], tmp_path: Path) -> None:
    demo = Proc(["barcast", "demo", "--duration", "10m", "--speed", "150", "--api-port", "0"], env, tmp_path)
    try:
        demo.wait_for(r"in another terminal", 120)
        printed = [demo.wait_for(r"^\s+\S", 5).strip() for _ in readme_commands()]
        assert [normalised(c) for c in printed] == readme_commands()
        assert all(("--db" in c or "--file" in c) for c in printed if c.startswith("barcast"))
        # a trained model's forecast, not only persistence's
        demo.wait_for(r"^forecast .*linear-", 120)
        for cmd in printed:
            code, out, err = run_listed(cmd, env, tmp_path)
            assert code == 0, f"{cmd}: exit {code}\n{out}{err}"
            assert out.strip(), f"{cmd}: printed nothing"
            if " status" in cmd:
                assert "from the daemon" in out and "binance:BTC-USDT:5m" in out, out
            if " forecasts" in cmd or " tail" in cmd:
                assert "linear-" in out or "persistence" in out, out
            if cmd.startswith("curl"):
                assert orjson.loads(out)["mode"] == "daemon"
    finally:
        code = demo.interrupt()
    out = "".join(demo.out)
    assert code == 0, "".join(demo.err)[-3000:]
    assert "demo summary for binance:BTC-USDT:5m" in out
    assert re.search(r"model\s+linear-\S+ \(serving; held-out MAE", out), out[-2000:]
    assert re.search(r"forecasts\s+[1-9]\d* issued", out)
    err = "".join(demo.err)
    assert not [b for b in BANNERS if b in err], err[-3000:]
    assert "\x1b[" not in err


def test_run_as_the_readme_says(env: dict[str, str], tmp_path: Path) -> None:
    """`barcast run` with the embedded defaults (offline its feed keeps retrying), under
    journald-like conditions: one JSON log format, no colours, no TensorFlow banner."""
    port = free_port()
    env = {**env, "BARCAST_API__PORT": str(port), "BARCAST_LOGGING__FORMAT": "json", "JOURNAL_STREAM": "8:1234"}
    run = Proc(["barcast", "run"], env, tmp_path)
    try:
        run.wait_for(r"barcast running", 180)
        for cmd in readme_commands():
            cmd = cmd.replace("localhost:8787", f"localhost:{port}")
            code, out, err = run_listed(cmd, env, tmp_path)
            assert code == 0, f"{cmd}: exit {code}\n{out}{err}"
            assert (out + err).strip(), f"{cmd}: printed nothing"
            if cmd.startswith("curl"):
                assert orjson.loads(out)["mode"] == "daemon"
    finally:
        code = run.interrupt()
    assert code == 0
    err = "".join(run.err)
    assert not [b for b in BANNERS if b in err], err[-3000:]
    assert "\x1b[" not in err
    loggers = set()
    for line in err.splitlines():
        doc = orjson.loads(line)  # every stderr line is one JSON log object
        loggers.add(doc["logger"])
    assert {"barcast.service", "uvicorn.error"} <= loggers, loggers
