"""The CLI reads as one tool: every --help works, every hint names a command that exists, one
series selector, and every bad name (series, exchange, interval, model) exits 2 listing the valid
choices."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from daemon.cli import main
from daemon.cli.common import SERIES_METAVAR, SeriesParam
from daemon.feeds import PROTOCOLS
from tests.daemon.clirun import barcast

ROOT = Path(__file__).resolve().parents[2]
GLOBAL_WITH_VALUE = {"--db", "--config", "--log-level"}


def walk(cmd: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(main))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "barcast")
def test_every_help(capsys: pytest.CaptureFixture[str], path: tuple[str, ...]) -> None:
    r = barcast(capsys, *path, "--help")
    assert r.code == 0, r.err
    assert r.out.startswith(f"Usage: barcast {' '.join(path)}".rstrip()), r.out[:200]
    assert "[not implemented" not in r.out


def test_one_series_selector() -> None:
    for path, cmd in COMMANDS:
        for p in cmd.params:
            if isinstance(p, click.Option) and "--series" in p.opts:
                assert isinstance(p.type, SeriesParam), path
                assert p.metavar == SERIES_METAVAR, path
            if isinstance(p, click.Option) and ("--exchange" in p.opts or "--symbol" in p.opts):
                # the capture tools speak a protocol; bars/import-bars keep documented aliases
                alias = (p.help or "").startswith("Alias:")
                tools = {("record",), ("parse",), ("exchange-sim",)}
                assert path in tools or alias, f"{path}: {p.opts} is not --series"


def test_format_help_names_only_its_choices() -> None:
    seen = 0
    for path, cmd in COMMANDS:
        for p in cmd.params:
            if isinstance(p, click.Option) and "--format" in p.opts:
                assert isinstance(p.type, click.Choice), path
                named = set(re.findall(r"\b(table|pretty|csv|jsonl|json)\b", p.help or ""))
                assert named <= set(p.type.choices), (path, p.help, p.type.choices)  # no format it lacks
                if (p.help or "").startswith("Output format:"):
                    assert named == set(p.type.choices), (path, p.help, p.type.choices)
                    seen += 1
    assert seen >= 10


def _hints() -> list[tuple[str, str]]:
    """Every `barcast …` in backticks in the sources and the README."""
    found = []
    files = [ROOT / "README.md", *(p for d in ("daemon", "trainer", "db") for p in (ROOT / d).rglob("*.py"))]
    for f in files:
        for m in re.finditer(r"`(barcast(?: [^`\n]*)?)`", f.read_text(encoding="utf-8")):
            found.append((f"{f.relative_to(ROOT)}", m.group(1)))
    return found


def test_every_hint_names_a_command() -> None:
    hints = _hints()
    assert len(hints) > 40
    bad = []
    for where, hint in hints:
        words = shlex.split(hint.replace("\\|", "|"))[1:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in GLOBAL_WITH_VALUE else words[1:]
        if not words:
            continue
        cmd: click.Command = main
        for w in words:
            if not isinstance(cmd, click.Group) or w.startswith(("-", "[")) or w.isupper():
                break
            if cmd is not main and cmd.invoke_without_command and w not in cmd.commands:
                break  # `barcast plot FILE…`: an argument, not a subcommand
            alternatives = w.split("|")  # `barcast db upgrade|stats`
            missing = [a for a in alternatives if a not in cmd.commands]
            if missing:
                bad.append(f"{where}: `{hint}` ({', '.join(missing)} not a command)")
                break
            cmd = cmd.commands[alternatives[0]]
    assert not bad, "\n".join(bad)


@pytest.fixture
def db(tmp_path: Path, shared_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 'names.db'}"
    csv = tmp_path / "bars.csv"
    lines = (shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv").read_text().splitlines()[:400]
    csv.write_text("\n".join(lines) + "\n")
    r = barcast(capsys, "--db", url, "import-bars", str(csv), "--series", "binance:BTC-USDT")
    assert r.code == 0, r.err
    return url


BAD = [
    (("forecasts", "--series", "nosuch:BTC-USD"), ["unknown exchange 'nosuch'", *sorted(PROTOCOLS)]),
    (("forecasts", "--series", "binance:BTC-USDT:7m"), ["'7m'", "1m", "5m", "15m", "1h"]),
    (("forecasts", "--series", "binance:ETH-USDT"), ["no such series", "binance:BTC-USDT:5m"]),
    (("forecasts", "--series", "binance:BTC-USDT,binance:ETH-USDT"), ["no such series", "binance:BTC-USDT:5m"]),
    (("forecasts", "--model", "nosuch"), ["--model 'nosuch'", "none", "barcast models list"]),
    (("accuracy", "--model", "nosuch"), ["--model 'nosuch'", "registered or forecasting"]),
    (("accuracy", "--series", "binance"), ["EXCHANGE:SYMBOL"]),
    (("plot", "--series", "binance:BTC-USDT", "--model", "nosuch", "--out", "x.png"), ["--model 'nosuch'"]),
    (("plot", "accuracy", "--model", "nosuch", "--out", "x.png"), ["--model 'nosuch'"]),
    (("bars", "--series", "kraken:BTC-USD"), ["no such series", "binance:BTC-USDT:5m"]),
    (("bars", "--exchange", "nosuch", "--symbol", "BTC-USD"), ["unknown exchange", "coinbase"]),
    (("tail", "--series", "nosuch:BTC-USD"), ["unknown exchange", "kraken"]),
    (("ingest", "--series", "binance:BTC-USDT,nosuch:X-Y"), ["unknown exchange 'nosuch'"]),
    (("retrain", "--series", "nosuch:BTC-USD"), ["unknown exchange"]),
    (("models", "list", "--series", "nosuch:BTC-USD"), ["unknown exchange"]),
    (("train", "--series", "binance:BTC-USDT", "--arch", "nosuch"), ["'nosuch'", "lstm", "linear"]),
    (("evaluate", "--series", "binance:BTC-USDT", "--models", "lstm,nosuch"), ["nosuch", "lstm", "drift"]),
    (("evaluate", "--series", "binance:SOL-USDT"), ["no such series"]),
    (("dataset", "export", "--series", "nosuch:BTC-USD", "--out", "x.h5"), ["unknown exchange"]),
    (("parse", "--exchange", "nosuch", "x"), ["'nosuch'", "binance"]),
    (("demo", "--protocol", "nosuch"), ["'nosuch'", "bitstamp"]),
    (("status", "--format", "yaml"), ["'yaml'", "table", "json"]),
]


@pytest.mark.parametrize(("argv", "expect"), BAD, ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_bad_names_exit_2_listing_valid_choices(
    capsys: pytest.CaptureFixture[str], db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...], expect: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    r = barcast(capsys, "--db", db, *argv)
    assert r.code == 2, (r.code, r.out, r.err)
    for text in expect:
        assert text in r.err, f"{text!r} not in {r.err!r}"
    assert "Traceback" not in r.err
    assert not (tmp_path / "x.png").exists()


def test_tables_round_floats_for_people_and_machines_keep_every_digit(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    from decimal import Decimal

    from daemon.cli.common import emit_rows

    rows = [{"model": "m", "mae": 323.5782749224003, "big": 12345678.9, "price": Decimal("32884.63000"), "n": None}]
    columns = ["model", "mae", "big", "price", "n"]
    emit_rows(rows, columns, "table")
    table = capsys.readouterr().out
    assert "323.578 " in table and "12345679" in table and "32884.63000" in table
    assert "323.5782749224003" not in table
    emit_rows(rows, columns, "json")
    assert json.loads(capsys.readouterr().out)[0]["mae"] == 323.5782749224003
