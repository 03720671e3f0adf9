"""Run the real `barcast` CLI entry point in-process and capture what a person would see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from daemon.cli import run


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def barcast(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    capsys.readouterr()
    code = 0
    try:
        run(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
