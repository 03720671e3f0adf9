"""Run the real `barcast` CLI entry point in-process and capture what a person would see."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


def har_champion(capsys: pytest.CaptureFixture[str], url: str, models: Path) -> str:
    """A `har` model of binance:BTC-USDT trained on the stored bars since June 2021 (its files in
    `models`) and promoted, as an installation's champion: its id."""
    res = barcast(capsys, "--db", url, "train", "--series", "binance:BTC-USDT", "--arch", "har", "--since",
                  "2021-06-01", "--artifacts", str(models), "--format", "json")
    assert res.code == 0, res.err
    model_id = str(json.loads(res.out)[0]["id"])
    res = barcast(capsys, "--db", url, "models", "promote", model_id)
    assert res.code == 0, res.err
    return model_id
