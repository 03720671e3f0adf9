"""`barcast gaps`: recorded feed gaps in every format, filtered by series, unfilled, newest N."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from db.bars import upsert_bars
from db.engine import open_database
from db.gaps import mark_gap_filled, record_gap
from db.records import Bar, SeriesKey
from tests.daemon.clirun import barcast

A = SeriesKey("binance", "BTC-USDT", "5m")
B = SeriesKey("coinbase", "BTC-USD", "1m")
T = datetime(2021, 1, 1, tzinfo=UTC)
M5, M1 = timedelta(minutes=5), timedelta(minutes=1)


@pytest.fixture
def gaps_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'gaps.db'}"
    db = open_database(url)
    bar = Bar(A.exchange, A.symbol, A.interval, T, *(Decimal(1),) * 4, Decimal(1), 1, "backfill")
    upsert_bars(db, [bar, Bar(B.exchange, B.symbol, B.interval, T, *(Decimal(1),) * 4, Decimal(1), 1, "live")])
    record_gap(db, A, T, T + 3 * M5)  # the exchange had one candle of three
    mark_gap_filled(db, A, T, T + 3 * M5)
    record_gap(db, B, T + 2 * M1, T + 4 * M1)
    record_gap(db, A, T + 6 * M5, T + 7 * M5)  # still filling
    db.close()
    return url


def test_every_format_lists_the_same_gaps_newest_first(gaps_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    res = barcast(capsys, "--db", gaps_db, "gaps", "--format", "json")
    assert res.code == 0, res.err
    docs = orjson.loads(res.out)
    assert [(d["series"], d["gap_start"], d["bars_missed"], d["bars_filled"]) for d in docs] == [
        ("binance:BTC-USDT:5m", "2021-01-01T00:30:00Z", 1, None),
        ("coinbase:BTC-USD:1m", "2021-01-01T00:02:00Z", 2, None),
        ("binance:BTC-USDT:5m", "2021-01-01T00:00:00Z", 3, 1),
    ]
    assert docs[2]["gap_end"] == "2021-01-01T00:15:00Z" and docs[2]["filled_at"].endswith("Z")
    assert docs[0]["filled_at"] is None and docs[0]["detected_at"].endswith("Z")
    res = barcast(capsys, "--db", gaps_db, "gaps", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.out)))
    assert [{k: v or None for k, v in r.items()} for r in rows] == [
        {k: None if v is None else str(v) for k, v in d.items()} for d in docs
    ]
    res = barcast(capsys, "--db", gaps_db, "gaps")
    assert res.code == 0 and "coinbase:BTC-USD:1m" in res.out and "2021-01-01T00:30:00Z" in res.out


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--unfilled"], [("binance:BTC-USDT:5m", "2021-01-01T00:30:00Z"),
                          ("coinbase:BTC-USD:1m", "2021-01-01T00:02:00Z")]),
        (["--series", "binance:BTC-USDT"], [("binance:BTC-USDT:5m", "2021-01-01T00:30:00Z"),
                                           ("binance:BTC-USDT:5m", "2021-01-01T00:00:00Z")]),
        (["--series", "coinbase:BTC-USD:1m", "--unfilled"], [("coinbase:BTC-USD:1m", "2021-01-01T00:02:00Z")]),
        (["--last", "1"], [("binance:BTC-USDT:5m", "2021-01-01T00:30:00Z")]),
        (["--series", "bitstamp:DOGE-USD:1h"], []),
    ],
)
def test_filters(gaps_db: str, capsys: pytest.CaptureFixture[str], args: list[str], expect: list) -> None:
    res = barcast(capsys, "--db", gaps_db, "gaps", *args, "--format", "json")
    if args[-1] == "bitstamp:DOGE-USD:1h":  # neither configured nor stored: a typo
        assert res.code == 2 and "no such series" in res.err and res.out == ""
        return
    assert res.code == 0, res.err
    assert [(d["series"], d["gap_start"]) for d in orjson.loads(res.out)] == expect


def test_nothing_recorded_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_database(url).close()
    res = barcast(capsys, "--db", url, "gaps")
    assert res.code == 0 and "no feed gaps recorded" in res.err and res.out == ""
    assert orjson.loads(barcast(capsys, "--db", url, "gaps", "--format", "json").out) == []
    assert barcast(capsys, "--db", url, "gaps", "--format", "csv").out.splitlines() == [
        "series,gap_start,gap_end,bars_missed,bars_filled,filled_at,detected_at"
    ]


def test_the_api_serves_the_same_gaps(gaps_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    import httpx

    from tests.daemon.test_ops_api import Running

    db = open_database(gaps_db)
    server = Running(db)  # the real uvicorn server on 127.0.0.1
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for query, args in (({}, []), ({"unfilled": "true", "series": "binance:BTC-USDT"},
                                            ["--unfilled", "--series", "binance:BTC-USDT"])):
                page = c.get("/gaps", params=query).json()
                cli = orjson.loads(barcast(capsys, "--db", gaps_db, "gaps", *args, "--format", "json").out)
                assert page["gaps"] == cli and page["count"] == len(cli) > 0
            bad = c.get("/gaps", params={"series": "binanse:BTC-USDT"})
            assert bad.status_code == 400 and "binanse" in bad.json()["error"]
    finally:
        server.stop()
        db.close()
