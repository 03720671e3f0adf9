"""Shared set-up of the live end-to-end tests: real bars, a simulator config, DB queries."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from db.bars import upsert_bars
from db.csvbars import read_bars_csv
from db.engine import open_database
from db.records import Bar, SeriesKey

SERIES = SeriesKey("binance", "BTC-USDT", "5m")
FIRST = datetime(2020, 12, 18, tzinfo=UTC)
SIM_START = datetime(2020, 12, 20, 12, tzinfo=UTC)


def real_bars(shared_dir: Path, end: datetime) -> list[Bar]:
    bars = read_bars_csv(shared_dir / "data" / "btcusdt_binance_5m_2020-12_2021-07.csv",
                         exchange="binance", symbol="BTC-USDT", interval="5m")
    return [b for b in bars if FIRST <= b.open_time < end]


def seed_history(db_url: str, bars: list[Bar], until: datetime) -> None:
    db = open_database(db_url)
    upsert_bars(db, [b for b in bars if b.open_time < until])
    db.close()


def config_text(tmp: Path, db_url: str, ws: str, rest: str, *, retrain: str = "enabled = false",
                window: int = 64) -> str:
    return f"""
[database]
url = "{db_url}"
[paths]
data_dir = "{tmp / 'data'}"
[[series]]
exchange = "binance"
symbol = "BTC-USDT"
[exchanges.binance]
ws_url = "{ws}"
rest_url = "{rest}"
[feeds]
clock = "feed"
backfill_days = 1.0
backoff_initial_s = 0.05
backoff_max_s = 0.2
stall_timeout_s = 5.0
[forecast]
device = "cpu"
arch = "linear"
coalesce_ms = 50
[data]
window = {window}
[train]
epochs = 2
[retrain]
{retrain}
[api]
port = 0
[service]
shutdown_timeout_s = 15
"""


def rows(db_path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()
